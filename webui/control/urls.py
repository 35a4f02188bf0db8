"""/settings/."""

from django.urls import path

from webui.control import views

urlpatterns = [
    path("", views.settings_list, name="setting-list"),
    path("<slug:name>/", views.setting_edit, name="setting-edit"),
]
