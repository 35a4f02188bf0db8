"""API representations. Validation is the web forms' own (each serializer builds the app's
ModelForm from its fields and asks it), so the API, the pages and the CLI accept and refuse
exactly the same things. Input is untrusted JSON from provisioning scripts.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from rest_framework import serializers

from webui.access.forms import AccessRuleForm
from webui.access.models import AccessRule
from webui.access.rules import parse_rule
from webui.aliases.forms import AliasForm
from webui.aliases.models import Alias
from webui.core.scoping import user_domains
from webui.core.validators import normalise_domain, parse_address, refuse_control_characters
from webui.domains.forms import DomainForm
from webui.domains.models import Domain
from webui.mailboxes.forms import MailboxForm
from webui.mailboxes.models import Mailbox
from webui.relay.forms import RelayNetworkForm
from webui.relay.models import RelayNetwork


def _form_errors(form: forms.BaseForm, rename: dict[str, str] | None = None) -> None:
    if form.is_valid():
        return
    rename = rename or {}
    errors = {rename.get(k, k if k != "__all__" else "non_field_errors"): v
              for k, v in form.errors.items()}
    raise serializers.ValidationError(errors)


def _user(serializer: serializers.Serializer) -> Any:  # type: ignore[type-arg]
    return serializer.context["request"].user


def split_address(text: str, user: Any, *, field: str,
                  allow_catch_all: bool = False) -> tuple[Domain, str]:
    """``local@domain`` (or ``@domain``) -> (one of the user's domains, local part)."""
    try:
        refuse_control_characters(text)
        if allow_catch_all and text.strip().startswith("@"):
            name, local = normalise_domain(text.strip()[1:]), ""
        else:
            addr = parse_address(text)
            name, local = addr.domain, addr.local
    except forms.ValidationError as exc:
        raise serializers.ValidationError({field: exc.messages}) from exc
    domain = user_domains(user).filter(name=name).first()
    if domain is None:
        # The same answer whether the domain exists elsewhere or not: nothing to probe.
        raise serializers.ValidationError({field: [f"{name} is not one of your domains"]})
    return domain, local


class DomainSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=253)
    unicode_name = serializers.CharField(read_only=True)

    class Meta:
        model = Domain
        fields = ["name", "unicode_name", "description", "enabled"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        data = {"name": attrs.get("name", getattr(self.instance, "name", "")),
                "description": attrs.get("description", getattr(self.instance, "description", "")),
                "enabled": attrs.get("enabled", getattr(self.instance, "enabled", True))}
        form = DomainForm(data=data, instance=self.instance or Domain(), user=_user(self))
        _form_errors(form)
        return form.cleaned_data

    def create(self, validated: dict[str, Any]) -> Domain:
        return Domain.objects.create(**validated)


class MailboxSerializer(serializers.Serializer):  # type: ignore[type-arg]
    address = serializers.CharField(max_length=320)
    password = serializers.CharField(write_only=True, required=False, max_length=1024,
                                     style={"input_type": "password"})
    quota = serializers.IntegerField(required=False, allow_null=True, min_value=0,
                                     help_text="bytes; null = unlimited")
    enabled = serializers.BooleanField(required=False, default=True)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    def to_representation(self, obj: Mailbox) -> dict[str, Any]:
        return {"address": obj.address, "quota": obj.quota, "enabled": obj.enabled,
                "name": obj.name}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        domain, local = split_address(attrs["address"], _user(self), field="address")
        inst = self.instance or Mailbox()
        data = {"local_part": local, "domain": domain.pk, "name": attrs.get("name", inst.name),
                "password": attrs.get("password", ""),
                "quota": "" if attrs.get("quota") is None else str(attrs["quota"]),
                "enabled": attrs.get("enabled", True)}
        form = MailboxForm(data=data, instance=inst, user=_user(self))
        _form_errors(form, {"local_part": "address", "domain": "address"})
        return {"form": form}

    def save(self, **kwargs: Any) -> Mailbox:
        self.instance = self.validated_data["form"].save()
        return self.instance


class AliasSerializer(serializers.Serializer):  # type: ignore[type-arg]
    source = serializers.CharField(max_length=320, help_text="local@domain, or @domain (catch-all)")
    targets = serializers.ListField(child=serializers.CharField(max_length=320),
                                    min_length=1, max_length=1000)
    enabled = serializers.BooleanField(required=False, default=True)

    def to_representation(self, obj: Alias) -> dict[str, Any]:
        return {"source": obj.source, "targets": list(obj.targets), "enabled": obj.enabled}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        domain, local = split_address(attrs["source"], _user(self), field="source",
                                      allow_catch_all=True)
        for t in attrs["targets"]:
            if any(c in t for c in ",\n\r\t ") and t.strip():
                raise serializers.ValidationError({"targets": f"{t[:60]!r}: one address per item"})
        data = {"local_part": local, "domain": domain.pk, "targets": "\n".join(attrs["targets"]),
                "enabled": attrs.get("enabled", True)}
        form = AliasForm(data=data, instance=self.instance or Alias(), user=_user(self))
        _form_errors(form, {"local_part": "source", "domain": "source"})
        return {"form": form}

    def save(self, **kwargs: Any) -> Alias:
        self.instance = self.validated_data["form"].save()
        return self.instance


class RelayNetworkSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    network = serializers.CharField(max_length=64)

    class Meta:
        model = RelayNetwork
        fields = ["network", "comment"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        inst = self.instance or RelayNetwork()
        form = RelayNetworkForm(data={"network": attrs.get("network", inst.network),
                                      "comment": attrs.get("comment", inst.comment)},
                                instance=inst, user=_user(self))
        _form_errors(form)
        return form.cleaned_data


class AccessRuleSerializer(serializers.Serializer):  # type: ignore[type-arg]
    rule = serializers.CharField(max_length=1000, help_text='tcprules syntax: 10.:allow,RELAYCLIENT=""')
    position = serializers.IntegerField(min_value=0, max_value=2**31 - 1)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    def to_representation(self, obj: AccessRule) -> dict[str, Any]:
        return {"rule": obj.rule, "position": obj.position, "comment": obj.comment}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            typed = parse_rule(attrs["rule"])
        except forms.ValidationError as exc:
            raise serializers.ValidationError({"rule": exc.messages}) from exc
        data = {"position": attrs["position"], "pattern": typed.pattern, "action": typed.action,
                "variables": "\n".join(f'{k}="{v}"' for k, v in typed.variables.items()),
                "comment": attrs.get("comment", "")}
        form = AccessRuleForm(data=data, instance=self.instance or AccessRule(), user=_user(self))
        _form_errors(form, {"pattern": "rule", "variables": "rule", "action": "rule"})
        return {"form": form}

    def save(self, **kwargs: Any) -> models.Model:
        self.instance = self.validated_data["form"].save()
        return self.instance
