"""Postern's web admin: the Django project and its apps.

The Celery app is imported here so that every ``@shared_task`` binds to it (Celery's
Django layout) and gets ``delay_on_commit``.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
