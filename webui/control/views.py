"""Settings pages: every known control-file setting with its value or qmail's default; edit
one; reset one to the default (its file is then removed by the next publish)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from webui.control.forms import SettingForm
from webui.control.models import ControlSetting
from webui.control.registry import BY_NAME, SETTINGS
from webui.core import changes
from webui.core.scoping import is_superadmin


def _require_superadmin(request: HttpRequest) -> None:
    if not is_superadmin(request.user):
        raise PermissionDenied("only a superadmin may change settings")


@login_required
def settings_list(request: HttpRequest) -> HttpResponse:
    _require_superadmin(request)
    values = {s.name: s.value for s in ControlSetting.objects.all()}
    rows = [(spec, values.get(spec.name)) for spec in SETTINGS]
    return render(request, "control/list.html", {"rows": rows})


def set_value(user: object, via: str, name: str, value: str) -> ControlSetting:
    """Save one validated setting (shared by the view, the API and the CLI)."""
    with transaction.atomic():
        obj = ControlSetting.objects.filter(name=name).first()
        before = changes.snapshot(obj) if obj else None
        if obj is None:
            obj = ControlSetting.objects.create(name=name, value=value)
        else:
            obj.value = value
            obj.save()
        changes.changed(user, via, "update" if before else "create", obj, before)
    return obj


@login_required
def setting_edit(request: HttpRequest, name: str) -> HttpResponse:
    _require_superadmin(request)
    spec = BY_NAME.get(name)
    if spec is None:
        raise Http404("no such setting")
    current = ControlSetting.objects.filter(name=name).first()
    form = SettingForm(request.POST or None, spec=spec,
                       initial={"value": current.value if current else ""})
    if request.method == "POST":
        if "reset" in request.POST:
            if current is not None:
                changes.delete(request.user, "web", current)
            messages.success(request, f"{name} reset to qmail's default; publishing.")
            return redirect("setting-list")
        if form.is_valid():
            set_value(request.user, "web", name, form.cleaned_data["value"])
            messages.success(request, f"{name} saved; publishing.")
            return redirect("setting-list")
    return render(request, "control/edit.html", {"form": form, "spec": spec, "current": current})
