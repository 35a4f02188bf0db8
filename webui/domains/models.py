"""Hosted domains and domain aliases.

Written by the web admin, the API and the CLI; read by the publisher (rcpthosts, locals,
aliases). Names are stored normalised (lower-case A-labels) by ``core.validators``.
"""

from __future__ import annotations

import idna
from django.db import models


class Domain(models.Model):
    name = models.CharField(max_length=253, unique=True, help_text="A-label, lower case")
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def unicode_name(self) -> str:
        try:
            return idna.decode(self.name)
        except idna.IDNAError:
            return self.name

    def audit_dict(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "enabled": self.enabled}

    @property
    def scope_domain(self) -> str:
        return self.name


class DomainAlias(models.Model):
    """``@name`` delivers as ``@target`` (every local part maps to the same one there)."""

    name = models.CharField(max_length=253, unique=True)
    target = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "domain aliases"

    def __str__(self) -> str:
        return f"{self.name} → {self.target.name}"

    def audit_dict(self) -> dict[str, object]:
        return {"name": self.name, "target": self.target.name}

    @property
    def scope_domain(self) -> str:
        return self.target.name
