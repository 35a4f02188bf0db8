"""/access/: the ordered rule list with the tester, and the generic add/edit/delete."""

from django.urls import path

from webui.access.views import ACCESS, rules_view
from webui.core.views import create_view, delete_view, edit_view

urlpatterns = [
    path("", rules_view, name="accessrule-list"),
    path("add/", create_view(ACCESS), name="accessrule-add"),
    path("<int:pk>/", edit_view(ACCESS), name="accessrule-edit"),
    path("<int:pk>/delete/", delete_view(ACCESS), name="accessrule-delete"),
]
