"""Django app configuration for webui.queue."""

from __future__ import annotations

from django.apps import AppConfig


class QueueConfig(AppConfig):
    name = "webui.queue"
    label = "postern_queue"
    verbose_name = "Queue"
