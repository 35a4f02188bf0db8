"""Template context: the published generation, when, and any error, shown on every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def publish_status(request: HttpRequest) -> dict[str, Any]:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    from webui.publish.models import ConfigVersion, Generation

    last_ok = Generation.objects.filter(ok=True).order_by("-number").first()
    last = Generation.objects.order_by("-id").first()
    return {
        "published": last_ok,
        "last_publish": last,
        "publish_pending": (last_ok.config_version if last_ok else -1) < ConfigVersion.current(),
    }
