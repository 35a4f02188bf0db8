"""URL map of the web admin and the API (each app has its own urls.py)."""

from __future__ import annotations

from django.urls import include, path

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
]
