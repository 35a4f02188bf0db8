"""Celery tasks of the publisher.

``publish_control_files`` is idempotent (it rebuilds every file from the database and writes
nothing when nothing changed), so it runs with ``acks_late``: a worker killed mid-publish
gets the task again. It takes no arguments; it reads the current state itself. Views call
``publish_control_files.delay_on_commit()`` so it never sees uncommitted rows.
``publish_if_stale`` (beat, every minute) republishes when the last good generation is older
than the configuration or control/ lost its stamp: a lost broker message converges.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def publish_control_files() -> int | None:
    from webui.publish.publisher import publish

    gen = publish()
    return gen.number if gen.ok else None


@shared_task(ignore_result=True)
def publish_if_stale() -> int | None:
    from django.conf import settings

    from webui.publish.models import ConfigVersion, Generation
    from webui.publish.publisher import _read_generation, publish

    last = Generation.objects.filter(ok=True).order_by("-number").first()
    on_disk = _read_generation(settings.POSTERN_CONTROL_DIR)
    if last is not None and last.config_version >= ConfigVersion.current() \
            and on_disk == last.number:
        return None
    gen = publish()
    return gen.number if gen.ok else None
