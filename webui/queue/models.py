"""Queue samples taken every minute by the beat task, for the queue-size graph."""

from __future__ import annotations

from django.db import models


class QueueSample(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    send_up = models.BooleanField(default=True)
    total = models.PositiveIntegerField(default=0)
    by_state = models.JSONField(default=dict)
    delivered = models.PositiveIntegerField(default=0, help_text="deliveries since the last sample")

    class Meta:
        ordering = ["-at"]
