"""Mailbox pages (generic scoped CRUD; CSV export/import is in the API)."""

from __future__ import annotations

from webui.core.views import ObjectAdmin
from webui.mailboxes.forms import MailboxForm
from webui.mailboxes.models import Mailbox

MAILBOXES = ObjectAdmin(
    model=Mailbox, form_class=MailboxForm, name="mailbox", title="Mailboxes",
    columns=[("Address", "address"), ("Name", "name"), ("Quota", "quota_display"),
             ("Enabled", "enabled")],
    search_fields=["local_part", "domain__name", "name"], domain_path="domain",
    select_related=["domain"],
)
