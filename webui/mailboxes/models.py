"""Mailboxes: ``local@domain``, a password hash (mta.common.passwd), a quota, enabled.

Written by the web admin, API and CLI; read by the publisher (mailboxes, passwd).
"""

from __future__ import annotations

from django.db import models

from mta.common.address import quote_local
from webui.domains.models import Domain


class Mailbox(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="mailboxes")
    local_part = models.CharField(max_length=64)
    password_hash = models.CharField(max_length=255, blank=True,
                                     help_text="{SCHEME}hash from mta.common.passwd")
    quota = models.BigIntegerField(null=True, blank=True, help_text="bytes; empty = unlimited")
    enabled = models.BooleanField(default=True)
    name = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["domain__name", "local_part"]
        constraints = [models.UniqueConstraint(fields=["domain", "local_part"],
                                               name="mailbox_unique_address")]
        verbose_name_plural = "mailboxes"

    def __str__(self) -> str:
        return self.address

    @property
    def address(self) -> str:
        return f"{quote_local(self.local_part)}@{self.domain.name}"

    @property
    def quota_display(self) -> str:
        from webui.core.validators import format_size

        return format_size(self.quota) or "unlimited"

    def audit_dict(self) -> dict[str, object]:
        # Never the hash: the audit log says a password changed, not what it is.
        return {"address": self.address, "quota": self.quota, "enabled": self.enabled,
                "name": self.name, "password_set": bool(self.password_hash)}

    @property
    def scope_domain(self) -> str:
        return self.domain.name
