"""The audit log page: every change, newest first, searchable; a domain admin sees the
entries of its own domains only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webui.audit.models import AuditEntry
from webui.core.scoping import is_superadmin, user_domains

PAGE = 50


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    qs = AuditEntry.objects.all()
    if not is_superadmin(request.user):
        qs = qs.filter(domain__in=list(user_domains(request.user).values_list("name", flat=True)))
    q = request.GET.get("q", "").strip()
    if q:
        qs = qs.filter(Q(username__icontains=q) | Q(object_repr__icontains=q) |
                       Q(model__icontains=q) | Q(domain__icontains=q))
    page = Paginator(qs, PAGE).get_page(request.GET.get("page"))
    return render(request, "audit/list.html", {"page": page, "q": q})
