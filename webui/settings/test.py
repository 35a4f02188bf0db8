"""Test settings: the embedded layout in a temporary state directory, eager Celery for the
view tests (the real worker, filesystem broker and Redis are exercised by
tests/webui/test_worker.py and test_production_backends.py), fast password hashing.

Set ``POSTERN_TEST_DATABASE_URL`` to run the Django tests against PostgreSQL instead of SQLite.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("POSTERN_STATE", tempfile.mkdtemp(prefix="postern-webui-test-"))

from .embedded import *  # noqa: E402,F403
from .dburl import database_from_url  # noqa: E402

DEBUG = False
if os.environ.get("POSTERN_TEST_DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["POSTERN_TEST_DATABASE_URL"])}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
