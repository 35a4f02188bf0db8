"""Relay forms: networks (CIDR or prefix, overlaps refused), relay domains with an optional
route (checked with REMOTE's smtproutes parser), and the smarthost with its login."""

from __future__ import annotations

from typing import Any

from django import forms

from mta.common.control import ControlError
from webui.core.forms import ScopedModelForm
from webui.core.mta_parsers import routes
from webui.core.networks import overlaps, parse_network
from webui.core.validators import normalise_domain, refuse_control_characters
from webui.relay.models import RelayDomain, RelayNetwork, Smarthost


def check_network(text: str, exclude_pk: int | None = None) -> str:
    value, net = parse_network(text)
    for other in RelayNetwork.objects.exclude(pk=exclude_pk):
        try:
            _, other_net = parse_network(other.network)
        except forms.ValidationError:
            continue
        if overlaps(net, other_net):
            raise forms.ValidationError(f"{value} overlaps {other.network}, already allowed to relay")
    return value


def check_route(host: str, port: int | None) -> None:
    mod = routes()
    if mod is None or not host:
        return
    text = host if port is None else f"{host}:{port}"
    try:
        mod.parse_relay(text, "route")
    except (ControlError, ValueError) as exc:
        raise forms.ValidationError(str(exc)) from exc


class RelayNetworkForm(ScopedModelForm):
    class Meta:
        model = RelayNetwork
        fields = ["network", "comment"]
        help_texts = {"network": "10.0.0.0/8, 2001:db8::/32, 192.168.1. or one address"}

    def clean_network(self) -> str:
        return check_network(self.cleaned_data["network"], self.instance.pk)


class RelayDomainForm(ScopedModelForm):
    name = forms.CharField(max_length=253, label="Domain")

    class Meta:
        model = RelayDomain
        fields = ["name", "route_host", "route_port"]

    def clean_name(self) -> str:
        from webui.domains.models import Domain, DomainAlias

        name = normalise_domain(self.cleaned_data["name"])
        if Domain.objects.filter(name=name).exists() or DomainAlias.objects.filter(name=name).exists():
            raise forms.ValidationError(f"{name} is hosted here; it cannot also be relayed")
        if RelayDomain.objects.filter(name=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(f"{name} is already a relay domain")
        return name

    def clean_route_host(self) -> str:
        host = self.cleaned_data.get("route_host", "").strip()
        refuse_control_characters(host)
        return host.lower()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        host, port = data.get("route_host", ""), data.get("route_port")
        if port and not host:
            self.add_error("route_port", "a port needs a route host")
        elif port is not None and not 0 < port < 65536:
            self.add_error("route_port", "a port is 1..65535")
        else:
            try:
                check_route(host, port)
            except forms.ValidationError as exc:
                self.add_error("route_host", exc)
        return data


class SmarthostForm(ScopedModelForm):
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                               help_text="leave empty to keep the current password")

    class Meta:
        model = Smarthost
        fields = ["enabled", "host", "port", "username", "password"]

    def clean_host(self) -> str:
        host = self.cleaned_data.get("host", "").strip().lower()
        refuse_control_characters(host)
        return host

    def clean_username(self) -> str:
        name = self.cleaned_data.get("username", "")
        if any(c.isspace() for c in name):
            raise forms.ValidationError("no spaces in the username")
        return name

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password", "")
        refuse_control_characters(value)
        return value or self.instance.password

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("enabled"):
            if not data.get("host"):
                self.add_error("host", "an enabled smarthost needs a host")
            else:
                port = data.get("port")
                if port is not None and not 0 < port < 65536:
                    self.add_error("port", "a port is 1..65535")
                    return data
                try:
                    check_route(data["host"], port)
                except forms.ValidationError as exc:
                    self.add_error("host", exc)
        return data
