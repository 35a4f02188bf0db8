"""Django app configuration for webui.relay."""

from __future__ import annotations

from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "webui.relay"
    label = "postern_relay"
    verbose_name = "Relay"
