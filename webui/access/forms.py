"""The access-rule form: position, address pattern, allow/deny, variables (one NAME=value a
line), each rendered and parsed by smtpd's tcprules parser before anything is saved; a rule
with the same address as an existing one (which would make one of them match nothing) is
refused; and the tester's form."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from django import forms

from webui.access.models import AccessRule
from webui.access.rules import check_row
from webui.core.forms import ScopedModelForm
from webui.core.validators import refuse_control_characters

_VAR = re.compile(r'([A-Za-z_][A-Za-z0-9_]{0,63})=(?:"([^"]*)"|(.*))')


def parse_variables(text: str) -> dict[str, str]:
    """``NAME=value`` or ``NAME="value"`` one a line (or comma-separated) -> dict."""
    out: dict[str, str] = {}
    for raw in re.split(r"[\n,]", text.replace("\r\n", "\n")):
        item = raw.strip()
        if not item:
            continue
        refuse_control_characters(item)
        m = _VAR.fullmatch(item)
        if not m:
            raise forms.ValidationError(f"{item[:40]!r}: expected NAME=value")
        name = m.group(1).upper()
        if name in out:
            raise forms.ValidationError(f"{name} is set twice")
        out[name] = m.group(2) if m.group(2) is not None else m.group(3).strip()
    return out


def check_unique_pattern(pattern: str, exclude_pk: int | None) -> None:
    from webui.relay.models import RelayNetwork

    clash = AccessRule.objects.filter(pattern=pattern).exclude(pk=exclude_pk).first()
    if clash is not None:
        raise forms.ValidationError(
            f"rule {clash.position} ({clash.rule}) has the same address: only one of them "
            "would ever match")
    if pattern and RelayNetwork.objects.filter(network=pattern).exists():
        raise forms.ValidationError(f"{pattern} is a relay network; edit it there")


class AccessRuleForm(ScopedModelForm):
    variables = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                                help_text='one a line: RELAYCLIENT="" or RBLSMTPD=-blocked')
    multiline_fields = frozenset({"variables"})

    class Meta:
        model = AccessRule
        fields = ["position", "pattern", "action", "variables", "comment"]
        help_texts = {"pattern": "1.2.3.4, 192.168.1., 10.0.0.0/8, 2001:db8::/32, "
                                 "=host.example, =.example.com; empty = every client"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pattern"].required = False
        if self.instance.pk:
            self.initial["variables"] = "\n".join(
                f'{k}="{v}"' for k, v in self.instance.variables.items())
        else:
            last = AccessRule.objects.order_by("-position").first()
            self.initial.setdefault("position", (last.position + 10) if last else 10)

    def clean_pattern(self) -> str:
        text = (self.cleaned_data.get("pattern") or "").strip()
        refuse_control_characters(text)
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise forms.ValidationError(f"{text}: {exc}") from exc
            text = str(net)
        check_unique_pattern(text, self.instance.pk)
        return text

    def clean_variables(self) -> dict[str, str]:
        return parse_variables(self.cleaned_data.get("variables") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "pattern" in data and "variables" in data and data.get("action"):
            try:
                check_row(data["pattern"], data["action"], data["variables"])
            except forms.ValidationError as exc:
                self.add_error("pattern", exc)
        return data


class TesterForm(forms.Form):
    ip = forms.GenericIPAddressField(label="Client IP address", unpack_ipv4=True)
    host = forms.CharField(label="Verified host name (optional)", required=False, max_length=253)

    def clean_host(self) -> str:
        host = self.cleaned_data.get("host", "").strip()
        refuse_control_characters(host)
        return host
