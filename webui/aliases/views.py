"""Alias pages (generic scoped CRUD)."""

from __future__ import annotations

from webui.aliases.forms import AliasForm
from webui.aliases.models import Alias
from webui.core.views import ObjectAdmin

ALIASES = ObjectAdmin(
    model=Alias, form_class=AliasForm, name="alias", title="Aliases and forwards",
    columns=[("Source", "source"), ("Targets", "targets_display"), ("Enabled", "enabled")],
    search_fields=["local_part", "domain__name", "targets"], domain_path="domain",
    select_related=["domain"],
    help="Forward mail for a source address to one or more targets. An empty local part "
         "makes the domain's catch-all.",
)
