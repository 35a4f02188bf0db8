"""Publishing state: a change counter bumped by every edit, and one row per generation of
control files written (or refused) by ``publish_control_files``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F


class ConfigVersion(models.Model):
    """Singleton (pk 1): ``version`` grows with every saved change."""

    version = models.PositiveBigIntegerField(default=0)

    @classmethod
    def bump(cls) -> None:
        cls.objects.get_or_create(pk=1)
        cls.objects.filter(pk=1).update(version=F("version") + 1)

    @classmethod
    def current(cls) -> int:
        row = cls.objects.filter(pk=1).first()
        return row.version if row else 0


class Generation(models.Model):
    """One publish attempt. ``ok`` ones are numbered generations present in control/."""

    number = models.PositiveBigIntegerField(null=True, blank=True, unique=True)
    config_version = models.PositiveBigIntegerField(default=0)
    started = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    files = models.JSONField(default=dict, help_text="file name -> sha256 of its content")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"generation {self.number}" if self.ok else f"failed publish {self.pk}"
