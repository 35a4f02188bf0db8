"""Django app configuration for webui.api."""

from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "webui.api"
    label = "postern_api"
    verbose_name = "API"
