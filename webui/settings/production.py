"""Production: PostgreSQL and Redis or RabbitMQ, named by environment settings; secure
cookies and HSTS behind a TLS reverse proxy.

Environment (read once at start-up):
    POSTERN_SECRET_KEY     required
    POSTERN_DATABASE_URL   postgresql://user:password@host:port/name (required)
    POSTERN_BROKER_URL     redis://host:6379/0 or amqp://user:password@host:5672// (required)
    POSTERN_ALLOWED_HOSTS  comma-separated host names
    POSTERN_STATE          the state directory (control/ is written here), or ``fhs``
"""

from __future__ import annotations

import os

from .base import *  # noqa: F403
from .base import STATE
from .dburl import database_from_url


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"production settings need {name} in the environment")
    return value


SECRET_KEY = _required("POSTERN_SECRET_KEY")
DATABASES = {"default": database_from_url(_required("POSTERN_DATABASE_URL"))}
CELERY_BROKER_URL = _required("POSTERN_BROKER_URL")
CELERY_BEAT_SCHEDULE_FILENAME = str(STATE.run / "celerybeat-schedule")

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_SSL_REDIRECT = os.environ.get("POSTERN_SSL_REDIRECT", "1") == "1"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = False
