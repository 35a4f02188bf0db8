"""/accounts/: login (throttled), logout, TOTP."""

from django.urls import path

from webui.accounts import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("totp/", views.totp_view, name="totp"),
]
