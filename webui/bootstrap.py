"""Start-up helpers for the appliance: migrate the database and create the first superadmin.

Called by ``postern init`` / ``postern run`` (APPLIANCE) and the CLI subcommands, in the
admin's own process, after ``django.setup()``. The password comes from the operator (stdin);
it is hashed by Django, never logged.
"""

from __future__ import annotations

import os
from pathlib import Path


def setup(settings_module: str = "webui.settings.embedded") -> None:
    """Point Django at ``settings_module`` (unless already set) and call ``django.setup()``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def prepare_database(verbosity: int = 0) -> None:
    """Create the database file's folder, apply every migration and, the first time, adopt
    the control files already in control/ (idempotent)."""
    setup()
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and db["NAME"] != ":memory:":
        Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=verbosity)
    # Keep what `postern init` wrote (me, locals, tcp.smtp, ...) as the first configuration,
    # so the first publish does not replace it with an empty one.
    from webui.publish.importer import adopt_control_files

    adopt_control_files(Path(settings.POSTERN_CONTROL_DIR))


def ensure_admin(username: str, password: str) -> bool:
    """Create the superadmin ``username`` if no user of that name exists.

    Returns True when it was created, False when it already existed (its password is left
    alone: re-running ``postern init`` must not reset what an admin changed).
    """
    setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    User = get_user_model()
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            return False
        User.objects.create_superuser(username=username, email="", password=password)
    return True
