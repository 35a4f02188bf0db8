"""Django app configuration for webui.mailboxes."""

from __future__ import annotations

from django.apps import AppConfig


class MailboxesConfig(AppConfig):
    name = "webui.mailboxes"
    label = "postern_mailboxes"
    verbose_name = "Mailboxes"
