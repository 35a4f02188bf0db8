"""Django app configuration for webui.core."""

from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "webui.core"
    label = "postern_core"
    verbose_name = "Core"
