"""Django app configuration for webui.accounts."""

from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "webui.accounts"
    label = "postern_accounts"
    verbose_name = "Accounts"
