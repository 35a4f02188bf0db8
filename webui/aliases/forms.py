"""The alias form: source (local part, or empty for the catch-all) in one of the user's
domains, targets one per line or comma-separated, each a valid address; loops refused with
the cycle named; a source that is already a mailbox refused."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from webui.aliases.loops import find_cycle
from webui.aliases.models import Alias
from webui.core.forms import ScopedModelForm
from webui.core.validators import parse_address, validate_local_part
from webui.domains.models import Domain

MAX_TARGETS = 1000


def parse_targets(text: str) -> list[str]:
    """Targets as typed (newlines, commas or spaces between them) -> normalised addresses.

    Raises:
        forms.ValidationError: naming the first bad target.
    """
    items = [t for t in re.split(r"[\s,]+", text) if t]
    if not items:
        raise forms.ValidationError("at least one target address")
    if len(items) > MAX_TARGETS:
        raise forms.ValidationError(f"at most {MAX_TARGETS} targets")
    out: list[str] = []
    for item in items:
        try:
            address = str(parse_address(item))
        except forms.ValidationError as exc:
            raise forms.ValidationError(f"{item}: {'; '.join(exc.messages)}") from exc
        if address not in out:
            out.append(address)
    return out


def alias_graph(exclude_pk: int | None = None) -> dict[str, list[str]]:
    """Every alias, domain alias (``@alias.example -> @real.example``) and mailbox (no edges)."""
    from webui.domains.models import DomainAlias

    from webui.mailboxes.models import Mailbox

    edges: dict[str, list[str]] = {}
    # A mailbox ends a chain: mail for it is delivered, not sent on to the catch-all.
    for m in Mailbox.objects.select_related("domain"):
        edges[m.address] = []
    for a in Alias.objects.select_related("domain").exclude(pk=exclude_pk):
        edges[a.source] = list(a.targets)
    for d in DomainAlias.objects.select_related("target"):
        edges[f"@{d.name}"] = [f"@{d.target.name}"]
    return edges


def check_loop(source: str, targets: list[str], exclude_pk: int | None = None) -> None:
    edges = alias_graph(exclude_pk)
    edges[source] = targets
    cycle = find_cycle(edges, source)
    if cycle:
        raise forms.ValidationError("this would make a loop: " + " → ".join(cycle))


def check_source_free(domain: Domain, local: str, exclude_pk: int | None = None) -> None:
    from webui.mailboxes.models import Mailbox

    if local and Mailbox.objects.filter(domain=domain, local_part__iexact=local).exists():
        raise forms.ValidationError(f"{local}@{domain.name} is a mailbox")
    if Alias.objects.filter(domain=domain, local_part__iexact=local).exclude(pk=exclude_pk).exists():
        what = f"{local}@{domain.name}" if local else f"the catch-all of {domain.name}"
        raise forms.ValidationError(f"{what} already exists")


class AliasForm(ScopedModelForm):
    local_part = forms.CharField(max_length=64, required=False, label="Source local part",
                                 help_text="empty = catch-all for the whole domain")
    targets = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}),
                              help_text="one address per line (or comma-separated)")
    multiline_fields = frozenset({"targets"})

    class Meta:
        model = Alias
        fields = ["local_part", "domain", "targets", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["targets"] = "\n".join(self.instance.targets)

    def clean_local_part(self) -> str:
        text = self.cleaned_data.get("local_part", "").strip()
        return validate_local_part(text) if text else ""

    def clean_targets(self) -> list[str]:
        return parse_targets(self.cleaned_data["targets"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        domain, targets = data.get("domain"), data.get("targets")
        local = data.get("local_part", "")
        if domain is None or targets is None or "local_part" in self.errors:
            return data
        try:
            check_source_free(domain, local, self.instance.pk)
        except forms.ValidationError as exc:
            self.add_error("local_part", exc)
            return data
        probe = Alias(domain=domain, local_part=local)
        try:
            check_loop(probe.source, targets, self.instance.pk)
        except forms.ValidationError as exc:
            self.add_error("targets", exc)
        return data
