"""Aliases and forwards: ``source`` -> one or more targets; an empty local part is the
domain's catch-all. Written by the web admin, API, CLI and import-qmail; read by the
publisher (aliases).
"""

from __future__ import annotations

from django.db import models

from mta.common.address import quote_local
from webui.domains.models import Domain


class Alias(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="alias_set")
    local_part = models.CharField(max_length=64, blank=True, help_text="empty = catch-all")
    targets = models.JSONField(default=list, help_text="list of addresses")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain__name", "local_part"]
        constraints = [models.UniqueConstraint(fields=["domain", "local_part"],
                                               name="alias_unique_source")]
        verbose_name_plural = "aliases"

    def __str__(self) -> str:
        return f"{self.source}: {', '.join(self.targets)}"

    @property
    def source(self) -> str:
        if not self.local_part:
            return f"@{self.domain.name}"
        return f"{quote_local(self.local_part)}@{self.domain.name}"

    @property
    def targets_display(self) -> str:
        return ", ".join(self.targets)

    @property
    def is_catch_all(self) -> bool:
        return not self.local_part

    def audit_dict(self) -> dict[str, object]:
        return {"source": self.source, "targets": list(self.targets), "enabled": self.enabled}

    @property
    def scope_domain(self) -> str:
        return self.domain.name
