"""URL map of the web admin and the API (each app has its own urls.py)."""

from __future__ import annotations

from django.conf import settings
from django.urls import include, path, re_path
from django.views.static import serve

from webui.core.views import home

urlpatterns = [
    path("", home, name="home"),
    path("accounts/", include("webui.accounts.urls")),
    path("domains/", include("webui.domains.urls")),
    path("mailboxes/", include("webui.mailboxes.urls")),
    path("aliases/", include("webui.aliases.urls")),
    path("relay/", include("webui.relay.urls")),
    path("access/", include("webui.access.urls")),
    path("settings/", include("webui.control.urls")),
    path("publish/", include("webui.publish.urls")),
    path("queue/", include("webui.queue.urls")),
    path("audit/", include("webui.audit.urls")),
    path("api/v1/", include("webui.api.urls")),
    # The appliance has one small stylesheet and no reverse proxy in front of it by default:
    # Django serves it (read-only, from the package; serve() refuses paths outside the root).
    re_path(r"^static/(?P<path>[A-Za-z0-9_./-]+)$", serve,
            {"document_root": settings.STATIC_DIR}),
]
