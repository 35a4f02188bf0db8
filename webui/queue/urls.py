"""/queue/ (filled in below)."""

from django.urls import path

from webui.core.views import home

urlpatterns = [path("", home, name="queue-summary")]
