"""/accounts/: login (throttled), logout, TOTP, admins, API tokens."""

from django.urls import include, path

from webui.accounts import views, views_admin
from webui.core.views import crud_urls

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("totp/", views.totp_view, name="totp"),
    path("tokens/", views_admin.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke/", views_admin.token_revoke, name="token-revoke"),
    path("admins/", include(crud_urls(views_admin.ADMINS))),
]
