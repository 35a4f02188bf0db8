"""Relay rules: client networks allowed to relay, relay domains (backup MX, with a route), and
the smarthost for all outbound mail. Superadmin only. Read by the publisher (tcp.smtp,
rcpthosts, smtproutes, relayauth).
"""

from __future__ import annotations

from django.db import models


class RelayNetwork(models.Model):
    """A CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or a tcprules prefix (``192.168.1.``)."""

    network = models.CharField(max_length=64, unique=True)
    comment = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network"]

    def __str__(self) -> str:
        return self.network

    def audit_dict(self) -> dict[str, object]:
        return {"network": self.network, "comment": self.comment}


class RelayDomain(models.Model):
    """We accept mail for ``name`` (backup MX) and pass it on to ``route`` (or its MX)."""

    name = models.CharField(max_length=253, unique=True)
    route_host = models.CharField(max_length=253, blank=True,
                                  help_text="empty = deliver by MX lookup")
    route_port = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def audit_dict(self) -> dict[str, object]:
        return {"name": self.name, "route_host": self.route_host, "route_port": self.route_port}


class Smarthost(models.Model):
    """The one smarthost (pk 1): every outbound message goes there when enabled."""

    enabled = models.BooleanField(default=False)
    host = models.CharField(max_length=253, blank=True)
    port = models.PositiveIntegerField(default=587)
    username = models.CharField(max_length=255, blank=True)
    password = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.enabled else "no smarthost"

    @classmethod
    def load(cls) -> "Smarthost":
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    def audit_dict(self) -> dict[str, object]:
        return {"enabled": self.enabled, "host": self.host, "port": self.port,
                "username": self.username, "password_set": bool(self.password)}
