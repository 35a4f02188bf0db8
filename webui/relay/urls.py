"""/relay/: networks, relay domains, smarthost."""

from django.urls import include, path

from webui.core.views import crud_urls
from webui.relay.views import NETWORKS, RELAY_DOMAINS, smarthost_view

urlpatterns = [
    path("domains/", include(crud_urls(RELAY_DOMAINS))),
    path("smarthost/", smarthost_view, name="smarthost"),
    *crud_urls(NETWORKS),
]
