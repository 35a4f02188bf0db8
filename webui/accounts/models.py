"""Admin roles, API tokens, login failures (throttling) and the optional TOTP secret.

A Django superuser is a superadmin; any other active user is a domain admin limited to the
domains in its profile. Tokens are stored as SHA-256 hashes; the plain token is shown once.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models

from webui.domains.models import Domain

TOKEN_PREFIX = "pst_"


class AdminProfile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="postern_profile")
    domains = models.ManyToManyField(Domain, blank=True, related_name="admins")
    totp_secret = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @classmethod
    def issue(cls, user: object, *, read_only: bool = False, name: str = "") -> tuple["ApiToken", str]:
        """Create a token; returns the row and the plain key (shown once, never stored)."""
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=key[:12],
                                   key_hash=cls.hash_key(key), read_only=read_only)
        return token, key


class LoginFailure(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    username = models.CharField(max_length=150, db_index=True)
    remote_addr = models.CharField(max_length=45, db_index=True)
