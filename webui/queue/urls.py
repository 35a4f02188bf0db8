"""/queue/."""

from django.urls import path

from webui.queue import views

urlpatterns = [
    path("", views.summary_view, name="queue-summary"),
    path("messages/", views.list_view, name="queue-list"),
    path("messages/<str:queue_id>/", views.message_view, name="queue-message"),
    path("log/", views.log_view, name="delivery-log"),
]
