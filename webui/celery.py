"""The Celery application: ``celery -A webui.celery worker`` and ``celery -A webui.celery beat``.

Run by the supervisor as the ``worker`` process (DESIGN.md). Reads its configuration from
Django settings (every ``CELERY_*`` name; embedded: kombu's filesystem broker under the state
directory; production: ``POSTERN_BROKER_URL``) and discovers each app's ``tasks.py``.
Messages on the broker are trusted only as far as their task names: every task re-reads the
current state from the database instead of trusting arguments.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings.embedded")

# DjangoTask gives every task delay_on_commit (enqueue after the transaction commits).
app = Celery("postern", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _make_broker_dirs() -> None:
    from django.conf import settings

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@worker_init.connect
def _prepare_worker(**_: object) -> None:
    _make_broker_dirs()
    from django.conf import settings

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    if options.get("processed_folder") and not options.get("store_processed"):
        # kombu's filesystem transport moves a consumed message to tempfile.gettempdir()
        # and deletes it there. /tmp is sticky: the worker could not delete a message the
        # web (another user) wrote. Our own, group-shared, non-sticky folder instead.
        tempfile.tempdir = options["processed_folder"]


def ensure_broker_dirs() -> None:
    """Create the filesystem broker's folders (the web process calls it before sending)."""
    _make_broker_dirs()
