"""Django app configuration for webui.publish."""

from __future__ import annotations

from django.apps import AppConfig


class PublishConfig(AppConfig):
    name = "webui.publish"
    label = "postern_publish"
    verbose_name = "Publishing"
