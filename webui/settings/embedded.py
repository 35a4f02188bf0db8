"""The embedded default (``make run``): SQLite at ``StateDir.database`` and kombu's
filesystem broker under the state directory; no service to install.

Read by the web process, the Celery worker/beat and the ``postern`` CLI when
``DJANGO_SETTINGS_MODULE`` is unset. The state directory comes from ``POSTERN_STATE``.
"""

from __future__ import annotations

import os

from .base import *  # noqa: F403
from .base import STATE, secret_key_from_state

SECRET_KEY = secret_key_from_state(STATE)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(STATE.database),
        # One writer at a time; wait instead of failing while a publish or the CLI writes.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

# The web (postern-web) and the worker (postern-admin) share kombu's folders through their
# setgid group: each must be able to rewrite the exchange-binding files the other created
# (kombu opens them "rb+"), so files are made group-writable as they are owner-writable.
_mask = os.umask(0)
os.umask(_mask & ~0o070 | ((_mask & 0o700) >> 3))

BROKER_DIR = STATE.root / "broker"
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(BROKER_DIR / "messages"),
    "data_folder_out": str(BROKER_DIR / "messages"),
    "control_folder": str(BROKER_DIR / "control"),
    # The worker points tempfile at this folder (webui/celery.py): kombu moves a consumed
    # message to the temp dir before deleting it, and /tmp is sticky.
    "processed_folder": str(BROKER_DIR / "processed"),
    "store_processed": False,
}
# Producers (web, CLI) and the worker both need the folders; kombu does not create them.
for _folder in (BROKER_DIR / "messages", BROKER_DIR / "control", BROKER_DIR / "processed"):
    try:
        _folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # a process without write access to the state dir will say so when it sends
CELERY_BEAT_SCHEDULE_FILENAME = str(STATE.run / "celerybeat-schedule")
