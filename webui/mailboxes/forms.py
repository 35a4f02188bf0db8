"""The mailbox form: local part + one of the user's domains, password (hashed with
mta.common.passwd, never stored plain), quota as a size, enabled."""

from __future__ import annotations

from typing import Any

from django import forms

from webui.aliases.models import Alias
from webui.core.forms import ScopedModelForm
from webui.core.mta_parsers import hash_password
from webui.core.validators import (format_size, parse_size, refuse_control_characters,
                                   validate_local_part)
from webui.mailboxes.models import Mailbox

MAX_PASSWORD = 1024


class MailboxForm(ScopedModelForm):
    local_part = forms.CharField(max_length=64, label="Local part")
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                               max_length=MAX_PASSWORD,
                               help_text="leave empty to keep the current password")
    quota = forms.CharField(required=False, help_text="e.g. 500M, 2G; empty = unlimited")

    class Meta:
        model = Mailbox
        fields = ["local_part", "domain", "name", "quota", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["password"].required = True
            self.fields["password"].help_text = ""
        else:
            self.initial["quota"] = format_size(self.instance.quota)

    def clean_local_part(self) -> str:
        return validate_local_part(self.cleaned_data["local_part"])

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password", "")
        refuse_control_characters(value)
        if value and len(value) < 8:
            raise forms.ValidationError("at least 8 characters")
        return value

    def clean_quota(self) -> int | None:
        text = self.cleaned_data.get("quota", "").strip()
        return parse_size(text) if text else None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        domain, local = data.get("domain"), data.get("local_part")
        if domain is not None and local:
            clash = Mailbox.objects.filter(domain=domain, local_part__iexact=local) \
                .exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error("local_part", f"{local}@{domain.name} already exists")
            elif Alias.objects.filter(domain=domain, local_part__iexact=local).exists():
                self.add_error("local_part", f"{local}@{domain.name} is already an alias")
        return data

    def save(self, commit: bool = True) -> Mailbox:
        obj: Mailbox = super().save(commit=False)
        if self.cleaned_data.get("password"):
            obj.password_hash = hash_password(self.cleaned_data["password"])
        if commit:
            obj.save()
        return obj
