"""TCP access rules (``tcp.smtp``): ordered pattern -> allow/deny with environment variables.
Superadmin only. Read by the publisher, which writes them in ``position`` order.
"""

from __future__ import annotations

from django.db import models


class AccessRule(models.Model):
    ALLOW = "allow"
    DENY = "deny"
    ACTIONS = [(ALLOW, "allow"), (DENY, "deny")]

    position = models.PositiveIntegerField(db_index=True)
    pattern = models.CharField(max_length=128, blank=True,
                               help_text="IP, tcprules prefix (192.168.1.), CIDR; empty = anyone")
    action = models.CharField(max_length=5, choices=ACTIONS, default=ALLOW)
    variables = models.JSONField(default=dict, blank=True,
                                 help_text='e.g. {"RELAYCLIENT": ""}')
    comment = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.rule

    @property
    def rule(self) -> str:
        from webui.publish.render import render_access_rule

        return render_access_rule(self.pattern, self.action, self.variables)

    def audit_dict(self) -> dict[str, object]:
        return {"position": self.position, "rule": self.rule, "comment": self.comment}
