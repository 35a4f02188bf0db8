"""Django app configuration for webui.aliases."""

from __future__ import annotations

from django.apps import AppConfig


class AliasesConfig(AppConfig):
    name = "webui.aliases"
    label = "postern_aliases"
    verbose_name = "Aliases"
