"""Generic list/create/edit/delete views for every administered object, scoped by role.

Each app describes its objects with an ``ObjectAdmin`` (model, form, columns, search fields,
domain path) and gets four views from ``crud_urls``. A domain admin asking for an object of a
domain it does not administer gets 404 (not found, so ids cannot be probed); for a global
object (relay, access, settings) it gets 403. Everything is rendered through Django templates
with autoescaping; nothing a user typed is marked safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from webui.core import changes
from webui.core.scoping import is_superadmin, scope_queryset

PAGE_SIZE = 50


@dataclass
class ObjectAdmin:
    model: type[Model]
    form_class: type[forms.ModelForm]  # type: ignore[type-arg]
    name: str                      # url name prefix, e.g. "mailbox"
    title: str                     # plural, for headings
    columns: list[tuple[str, str]]  # (heading, attribute or callable name)
    search_fields: list[str]
    domain_path: str | None        # see scoping.scope_queryset
    select_related: list[str] = field(default_factory=list)
    superadmin_only: bool = False
    help: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url name)

    def queryset(self, user: Any) -> QuerySet[Any]:
        if self.superadmin_only and not is_superadmin(user):
            raise PermissionDenied("only a superadmin may do this")
        qs = self.model._default_manager.all()
        if self.select_related:
            qs = qs.select_related(*self.select_related)
        return scope_queryset(qs, user, self.domain_path)


def _cell(obj: Model, attr: str) -> Any:
    value = getattr(obj, attr)
    return value() if callable(value) else value


def list_view(admin: ObjectAdmin) -> Callable[..., HttpResponse]:
    @login_required
    def view(request: HttpRequest) -> HttpResponse:
        qs = admin.queryset(request.user)
        q = request.GET.get("q", "").strip()
        if q:
            cond = Q()
            for f in admin.search_fields:
                cond |= Q(**{f"{f}__icontains": q})
            qs = qs.filter(cond)
        page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [(obj, [_cell(obj, a) for _, a in admin.columns]) for obj in page]
        return render(request, "core/list.html", {
            "admin": admin, "page": page, "rows": rows, "q": q,
            "headings": [h for h, _ in admin.columns],
        })
    return view


def _form_kwargs(request: HttpRequest) -> dict[str, Any]:
    return {"user": request.user}


def create_view(admin: ObjectAdmin) -> Callable[..., HttpResponse]:
    @login_required
    def view(request: HttpRequest) -> HttpResponse:
        admin.queryset(request.user)  # role check
        form = admin.form_class(request.POST or None, **_form_kwargs(request))
        if request.method == "POST" and form.is_valid():
            with transaction.atomic():
                obj = form.save()
                changes.changed(request.user, "web", "create", obj, None)
            messages.success(request, f"Added {obj}; publishing.")
            return redirect(f"{admin.name}-list")
        return render(request, "core/form.html", {"admin": admin, "form": form, "object": None})
    return view


def edit_view(admin: ObjectAdmin) -> Callable[..., HttpResponse]:
    @login_required
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        obj = get_object_or_404(admin.queryset(request.user), pk=pk)
        before = changes.snapshot(obj)
        form = admin.form_class(request.POST or None, instance=obj, **_form_kwargs(request))
        if request.method == "POST" and form.is_valid():
            with transaction.atomic():
                obj = form.save()
                changes.changed(request.user, "web", "update", obj, before)
            messages.success(request, f"Saved {obj}; publishing.")
            return redirect(f"{admin.name}-list")
        return render(request, "core/form.html", {"admin": admin, "form": form, "object": obj})
    return view


def delete_view(admin: ObjectAdmin) -> Callable[..., HttpResponse]:
    @login_required
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        obj = get_object_or_404(admin.queryset(request.user), pk=pk)
        if request.method == "POST":
            label = str(obj)
            changes.delete(request.user, "web", obj)
            messages.success(request, f"Deleted {label}; publishing.")
            return redirect(f"{admin.name}-list")
        return render(request, "core/confirm_delete.html", {"admin": admin, "object": obj})
    return view


def crud_urls(admin: ObjectAdmin) -> list[Any]:
    return [
        path("", list_view(admin), name=f"{admin.name}-list"),
        path("add/", create_view(admin), name=f"{admin.name}-add"),
        path("<int:pk>/", edit_view(admin), name=f"{admin.name}-edit"),
        path("<int:pk>/delete/", delete_view(admin), name=f"{admin.name}-delete"),
    ]


@login_required
def home(request: HttpRequest) -> HttpResponse:
    from webui.aliases.models import Alias
    from webui.domains.models import Domain
    from webui.mailboxes.models import Mailbox

    user = request.user
    counts = {
        "domains": scope_queryset(Domain.objects.all(), user, "").count(),
        "mailboxes": scope_queryset(Mailbox.objects.all(), user, "domain").count(),
        "aliases": scope_queryset(Alias.objects.all(), user, "domain").count(),
    }
    return render(request, "core/home.html", {"counts": counts,
                                              "queue_url": reverse("queue-summary")})
