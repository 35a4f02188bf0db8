"""The WSGI entry point: ``gunicorn webui.wsgi`` (the ``web`` process, DESIGN.md)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings.embedded")

application = get_wsgi_application()
