"""API permissions: authenticated; a read-only token may only use safe methods; global
objects (relay, access rules) need a superadmin. Domain scoping is in the querysets."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from webui.accounts.models import ApiToken
from webui.core.scoping import is_superadmin


class TokenScopePermission(permissions.BasePermission):
    message = "this token may not do that"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if isinstance(request.auth, ApiToken) and request.auth.read_only \
                and request.method not in permissions.SAFE_METHODS:
            self.message = "this token is read-only"
            return False
        if getattr(view, "superadmin_only", False) and not is_superadmin(user):
            self.message = "only a superadmin may use this endpoint"
            return False
        return True
