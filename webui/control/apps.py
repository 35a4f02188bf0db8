"""Django app configuration for webui.control."""

from __future__ import annotations

from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "webui.control"
    label = "postern_control"
    verbose_name = "Settings"
