"""One-value control files as admin settings (me, databytes, ...). A row exists only for a
setting an admin set; a missing row means qmail's default (the file is not written).
"""

from __future__ import annotations

from django.db import models


class ControlSetting(models.Model):
    name = models.CharField(max_length=64, unique=True)
    value = models.CharField(max_length=1000)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"

    def audit_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value}
