"""Django for the web-app tests: the test settings (webui/settings/test.py), loaded here and
then removed from the environment again, so subprocesses started by other tests in the same
worker (``postern init``, daemons) never inherit the test settings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_had_state = "POSTERN_STATE" in os.environ
os.environ["DJANGO_SETTINGS_MODULE"] = "webui.settings.test"
import django  # noqa: E402

django.setup()
del os.environ["DJANGO_SETTINGS_MODULE"]
if not _had_state:
    os.environ.pop("POSTERN_STATE", None)


@pytest.fixture
def control_dir(tmp_path: Path, settings) -> Path:  # type: ignore[no-untyped-def]
    """A fresh control/ for the publisher, with the status socket and log beside it."""
    control = tmp_path / "control"
    control.mkdir()
    (tmp_path / "log").mkdir()
    (tmp_path / "run").mkdir()
    settings.POSTERN_CONTROL_DIR = control
    settings.POSTERN_LOG_DIR = tmp_path / "log"
    settings.POSTERN_STATUS_SOCKET = tmp_path / "run" / "status.sock"
    return control


@pytest.fixture
def superadmin(db, django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_superuser("root", "", "correct horse 1")


@pytest.fixture
def admin_client(client, superadmin, control_dir):  # type: ignore[no-untyped-def]
    client.force_login(superadmin)
    return client


def make_domain_admin(username: str, *domains: object):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from webui.accounts.models import AdminProfile

    user = get_user_model().objects.create_user(username, "", "correct horse 2")
    profile = AdminProfile.objects.create(user=user)
    profile.domains.set(domains)
    return user
