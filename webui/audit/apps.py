"""Django app configuration for webui.audit."""

from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "webui.audit"
    label = "postern_audit"
    verbose_name = "Audit log"
