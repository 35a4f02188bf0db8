"""Mailbox pages (generic scoped CRUD) and CSV export/import (shared with the API)."""

from __future__ import annotations

from webui.core.views import ObjectAdmin
from webui.mailboxes.forms import MailboxForm
from webui.mailboxes.models import Mailbox


def _quota(m: Mailbox) -> str:
    from webui.core.validators import format_size

    return format_size(m.quota) or "unlimited"


Mailbox.quota_display = property(_quota)  # type: ignore[attr-defined]

MAILBOXES = ObjectAdmin(
    model=Mailbox, form_class=MailboxForm, name="mailbox", title="Mailboxes",
    columns=[("Address", "address"), ("Name", "name"), ("Quota", "quota_display"),
             ("Enabled", "enabled")],
    search_fields=["local_part", "domain__name", "name"], domain_path="domain",
    select_related=["domain"],
)
