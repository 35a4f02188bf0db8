"""/domains/ and /domains/aliases/."""

from django.urls import include, path

from webui.core.views import crud_urls
from webui.domains.views import DOMAIN_ALIASES, DOMAINS

urlpatterns = [
    path("aliases/", include(crud_urls(DOMAIN_ALIASES))),
    *crud_urls(DOMAINS),
]
