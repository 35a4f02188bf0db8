"""Django app configuration for webui.domains."""

from __future__ import annotations

from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "webui.domains"
    label = "postern_domains"
    verbose_name = "Domains"
