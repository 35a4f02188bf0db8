"""Django app configuration for webui.api."""

from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "webui.api"
    label = "postern_api"
    verbose_name = "API"

    def ready(self) -> None:
        from webui.api import schema  # noqa: F401  (registers the Bearer scheme)
