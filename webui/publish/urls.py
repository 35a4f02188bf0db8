"""/publish/."""

from django.urls import path

from webui.publish import views

urlpatterns = [
    path("", views.status_view, name="publish-status"),
    path("now/", views.publish_now, name="publish-now"),
]
