"""Turn ``POSTERN_DATABASE_URL`` (``postgresql://user:pw@host:port/name``) into a Django
DATABASES entry. Read by production and test settings; the URL comes from the operator.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def database_from_url(url: str) -> dict[str, Any]:
    """Parse a database URL; raises ``ValueError`` for an unknown scheme."""
    parts = urlsplit(url)
    engine = _ENGINES.get(parts.scheme)
    if engine is None:
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}")
    if engine.endswith("sqlite3"):
        return {"ENGINE": engine, "NAME": unquote(parts.path)}
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")) or "postern",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        "CONN_MAX_AGE": 60,
    }
