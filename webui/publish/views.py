"""The publishing page: the published generation, when, recent attempts and their errors,
and a "publish now" button."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webui.core.changes import request_publish
from webui.publish.models import Generation

RECENT = 20


@login_required
def status_view(request: HttpRequest) -> HttpResponse:
    return render(request, "publish/status.html",
                  {"generations": Generation.objects.order_by("-id")[:RECENT]})


@login_required
@require_POST
def publish_now(request: HttpRequest) -> HttpResponse:
    request_publish()
    messages.success(request, "Publishing.")
    return redirect("publish-status")
