"""The audit log: one row per change (who, what, before/after, when). Written by
``webui.audit.record`` from views, the API and the CLI; never edited, only read.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, help_text="kept when the user is deleted")
    via = models.CharField(max_length=10, default="web")  # web | api | cli
    action = models.CharField(max_length=10)  # create | update | delete
    model = models.CharField(max_length=50)
    object_id = models.CharField(max_length=50, blank=True)
    object_repr = models.CharField(max_length=300)
    domain = models.CharField(max_length=253, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.username} {self.action} {self.object_repr}"
