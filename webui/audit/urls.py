"""/audit/."""

from django.urls import path

from webui.audit.views import audit_list

urlpatterns = [path("", audit_list, name="audit-list")]
