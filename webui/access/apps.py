"""Django app configuration for webui.access."""

from __future__ import annotations

from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "webui.access"
    label = "postern_access"
    verbose_name = "Access rules"
