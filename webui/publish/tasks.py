"""Celery tasks (filled in below)."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def publish_control_files() -> None:
    pass


@shared_task
def publish_if_stale() -> None:
    pass
