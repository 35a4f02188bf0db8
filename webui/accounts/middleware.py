"""The second-factor gate: a user with a TOTP secret who has logged in with a password but
not yet given a code may reach only the code page and logout. Runs on every web request.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

SESSION_KEY = "postern_totp_ok"
_OPEN_PATHS = ("/accounts/totp/", "/accounts/logout/", "/static/", "/api/")


class SecondFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not request.path.startswith(_OPEN_PATHS):
            profile = getattr(user, "postern_profile", None)
            if profile is not None and profile.totp_secret and not request.session.get(SESSION_KEY):
                return redirect("totp")
        return self.get_response(request)
