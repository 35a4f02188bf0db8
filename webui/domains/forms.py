"""Domain and domain-alias forms: names normalised to A-labels, duplicates refused, and a
domain alias may not shadow a hosted domain (or the reverse)."""

from __future__ import annotations

from typing import Any

from django import forms

from webui.core.forms import ScopedModelForm
from webui.core.scoping import is_superadmin
from webui.core.validators import normalise_domain
from webui.domains.models import Domain, DomainAlias


def check_name_free(name: str, *, exclude_domain: int | None = None,
                    exclude_alias: int | None = None) -> None:
    """Refuse a name already used by a domain, a domain alias or a relay domain."""
    from webui.relay.models import RelayDomain

    if Domain.objects.filter(name=name).exclude(pk=exclude_domain).exists():
        raise forms.ValidationError(f"{name} is already a hosted domain")
    if DomainAlias.objects.filter(name=name).exclude(pk=exclude_alias).exists():
        raise forms.ValidationError(f"{name} is already a domain alias")
    if RelayDomain.objects.filter(name=name).exists():
        raise forms.ValidationError(f"{name} is already a relay domain")


class DomainForm(ScopedModelForm):
    name = forms.CharField(max_length=253, help_text="Unicode (IDN) or ASCII")

    class Meta:
        model = Domain
        fields = ["name", "description", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["name"] = self.instance.unicode_name
            if not is_superadmin(self.user):
                # A domain admin may describe or disable its domain, not rename it.
                self.fields["name"].disabled = True

    def clean_name(self) -> str:
        name = normalise_domain(self.cleaned_data["name"])
        check_name_free(name, exclude_domain=self.instance.pk)
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.instance.pk and not is_superadmin(self.user):
            raise forms.ValidationError("only a superadmin may add domains")
        return data


class DomainAliasForm(ScopedModelForm):
    name = forms.CharField(max_length=253, label="Alias domain")

    class Meta:
        model = DomainAlias
        fields = ["name", "target"]

    def clean_name(self) -> str:
        name = normalise_domain(self.cleaned_data["name"])
        check_name_free(name, exclude_alias=self.instance.pk)
        if not is_superadmin(self.user) and name != self.instance.name:
            # A new name in rcpthosts is a new domain: a superadmin's decision, as for domains.
            raise forms.ValidationError("only a superadmin may add or rename domain aliases")
        return name
