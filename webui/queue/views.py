"""Queue pages (read-only, superadmin): summary with the graph, a filtered paginated list,
one message's envelope and per-recipient state, and the delivery-log search. When send is
down each page says so plainly instead of failing."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from mta.common.deliverylog import EVENTS
from webui.core.scoping import is_superadmin
from webui.core.validators import refuse_control_characters
from webui.queue import status
from webui.queue.graph import chart
from webui.queue.models import QueueSample

PAGE = 50
STATES = ("active", "queued", "deferred", "bouncing", "done")
GRAPH_POINTS = 120


def _superadmin(request: HttpRequest) -> None:
    if not is_superadmin(request.user):
        raise PermissionDenied("only a superadmin may see the queue")


@login_required
def summary_view(request: HttpRequest) -> HttpResponse:
    _superadmin(request)
    ctx: dict[str, Any] = {}
    try:
        ctx["summary"] = status.summary()
    except status.SendDown as exc:
        ctx["down"] = str(exc)
    samples = list(QueueSample.objects.order_by("-at")[:GRAPH_POINTS])[::-1]
    ctx["graph"] = chart([s.total for s in samples], [s.delivered for s in samples])
    ctx["samples"] = len(samples)
    return render(request, "queue/summary.html", ctx)


class ListFilter(forms.Form):
    state = forms.ChoiceField(choices=[("", "any")] + [(s, s) for s in STATES], required=False)
    sender = forms.CharField(required=False, max_length=900)
    recipient = forms.CharField(required=False, max_length=900)
    domain = forms.CharField(required=False, max_length=253)
    page = forms.IntegerField(required=False, min_value=1, max_value=10**6)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for key in ("sender", "recipient", "domain"):
            refuse_control_characters(data.get(key) or "")
        return data


@login_required
def list_view(request: HttpRequest) -> HttpResponse:
    _superadmin(request)
    form = ListFilter(request.GET or None)
    ctx: dict[str, Any] = {"form": form}
    if form.is_valid() or not request.GET:
        data = form.cleaned_data if request.GET else {}
        filters = {k: v for k, v in data.items() if v and k != "page"}
        page = data.get("page") or 1
        try:
            answer = status.listing(offset=(page - 1) * PAGE, limit=PAGE, **filters)
            total = int(answer.get("total", 0))
            ctx.update(messages_=answer.get("messages", []), total=total, page=page,
                       pages=max(1, -(-total // PAGE)),
                       query=urlencode(filters))
        except status.SendDown as exc:
            ctx["down"] = str(exc)
        except status.QueueRequestError as exc:
            ctx["error"] = str(exc)
    return render(request, "queue/list.html", ctx)


@login_required
def message_view(request: HttpRequest, queue_id: str) -> HttpResponse:
    _superadmin(request)
    ctx: dict[str, Any] = {"queue_id": queue_id}
    try:
        msg = status.message(queue_id)
        msg["born"] = datetime.fromtimestamp(int(msg.get("birth", 0)), tz=timezone.utc)
        for r in msg.get("recipients", []):
            nxt = r.get("next_attempt")
            r["next_at"] = datetime.fromtimestamp(nxt, tz=timezone.utc) if isinstance(nxt, (int, float)) else None
        ctx["message"] = msg
    except status.SendDown as exc:
        ctx["down"] = str(exc)
    except status.QueueRequestError as exc:
        ctx["error"] = str(exc)
    return render(request, "queue/message.html", ctx, status=404 if "error" in ctx else 200)


class LogFilter(forms.Form):
    sender = forms.CharField(required=False, max_length=900)
    recipient = forms.CharField(required=False, max_length=900)
    queue_id = forms.CharField(required=False, max_length=64, label="Queue id")
    event = forms.ChoiceField(choices=[("", "any")] + [(e, e) for e in sorted(EVENTS)],
                              required=False, label="Status")
    since = forms.DateTimeField(required=False, help_text="UTC, e.g. 2026-11-25 10:00")
    until = forms.DateTimeField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for key in ("sender", "recipient", "queue_id"):
            refuse_control_characters(data.get(key) or "")
        return data


@login_required
def log_view(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    from webui.queue.deliverylog import LogQuery, LogUnreadable, search

    _superadmin(request)
    form = LogFilter(request.GET or None)
    events: list[dict[str, Any]] = []
    unreadable = ""
    if form.is_valid() or not request.GET:
        d = form.cleaned_data if request.GET else {}
        q = LogQuery(sender=d.get("sender") or "", recipient=d.get("recipient") or "",
                     queue_id=d.get("queue_id") or "", event=d.get("event") or "",
                     since=d["since"].timestamp() if d.get("since") else None,
                     until=d["until"].timestamp() if d.get("until") else None)
        try:
            events = search(settings.POSTERN_LOG_DIR, q)
        except LogUnreadable as exc:
            unreadable = str(exc)
    return render(request, "queue/log.html", {"form": form, "events": events,
                                              "unreadable": unreadable})
