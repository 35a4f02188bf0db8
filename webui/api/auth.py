"""Bearer-token authentication for the API: ``Authorization: Bearer pst_...``.

The token arrives from the network; it is looked up by its SHA-256 hash only, so the
database never holds a usable token and a timing difference reveals nothing of one.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from webui.accounts.models import ApiToken

MAX_TOKEN = 200


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2 or len(parts[1]) > MAX_TOKEN:
            raise exceptions.AuthenticationFailed("malformed Bearer header")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("malformed token") from exc
        token = (ApiToken.objects.select_related("user")
                 .filter(key_hash=ApiToken.hash_key(key)).first())
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("invalid token")
        ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
