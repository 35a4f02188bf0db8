"""/api/v1/: the router, the queue summary and the OpenAPI schema."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from webui.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("domains", views.DomainViewSet, basename="api-domain")
router.register("mailboxes", views.MailboxViewSet, basename="api-mailbox")
router.register("aliases", views.AliasViewSet, basename="api-alias")
router.register("relay-networks", views.RelayNetworkViewSet, basename="api-relaynetwork")
router.register("access-rules", views.AccessRuleViewSet, basename="api-accessrule")

urlpatterns = [
    path("queue/summary", views.QueueSummaryView.as_view(), name="api-queue-summary"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[],
                                               authentication_classes=[]), name="api-schema"),
    path("", include(router.urls)),
]
