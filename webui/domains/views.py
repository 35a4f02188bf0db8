"""Domain and domain-alias pages (generic scoped CRUD from webui.core.views)."""

from __future__ import annotations

from webui.core.views import ObjectAdmin
from webui.domains.forms import DomainAliasForm, DomainForm
from webui.domains.models import Domain, DomainAlias

DOMAINS = ObjectAdmin(
    model=Domain, form_class=DomainForm, name="domain", title="Domains",
    columns=[("Domain", "unicode_name"), ("A-label", "name"), ("Enabled", "enabled"),
             ("Description", "description")],
    search_fields=["name", "description"], domain_path="",
    help="Domains whose mail is delivered here. Internationalised names are stored as A-labels.",
    links=[("Domain aliases", "domainalias-list")],
)
DOMAIN_ALIASES = ObjectAdmin(
    model=DomainAlias, form_class=DomainAliasForm, name="domainalias", title="Domain aliases",
    columns=[("Alias domain", "name"), ("Delivers as", "target")],
    search_fields=["name", "target__name"], domain_path="target", select_related=["target"],
    help="Every address @alias is delivered as the same local part @target.",
    links=[("Domains", "domain-list")],
)
