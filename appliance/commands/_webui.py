"""Shared plumbing of the ``postern`` subcommands that administer through the web app's
database (domain, mailbox, alias, relay, access, admin, token, publish, import-qmail).

Each sets ``POSTERN_STATE`` from ``--state``, ``DJANGO_SETTINGS_MODULE`` (the embedded
settings unless already set) and calls ``django.setup()`` lazily, so ``postern run`` and
``postern sendmail`` never pay for Django. Changes are validated by the web forms (the same
rules as the pages and the API), audited as made by the invoking OS user via "cli", and
published synchronously before the command returns. Exit 0 on success; otherwise one line
``postern: reason`` on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

EX_USAGE = 64     # sysexits.h: bad input
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75


class CommandError(Exception):
    """A one-line reason; ``status`` is the exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def setup(args: argparse.Namespace) -> None:
    from mta.common.paths import STATE_ENV

    state = getattr(args, "state", None)
    if state:
        os.environ[STATE_ENV] = str(state)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings.embedded")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    import logging

    logging.getLogger("postern.publish").setLevel(logging.WARNING)  # success is silent
    from webui.bootstrap import prepare_database

    prepare_database()


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no passwd entry for this uid
        return f"cli:uid{os.getuid()}"


def form_error(form: Any) -> str:
    """The first error of a Django form as ``field: message``."""
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{field}: "
        return f"{label}{errors[0]}"
    return "invalid input"


def read_password(args: argparse.Namespace) -> str:
    if not getattr(args, "password_stdin", False):
        raise CommandError("a password is needed: pass --password-stdin and write it to stdin",
                           EX_USAGE)
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if password.endswith("\r"):
        password = password[:-1]
    if not password:
        raise CommandError("no password on stdin", EX_DATAERR)
    return password


def publish() -> int:
    """Publish now; raise CommandError if the set was refused."""
    from webui.publish.publisher import publish as do_publish

    gen = do_publish()
    if not gen.ok:
        raise CommandError(f"saved, but publishing failed: {gen.error}", EX_TEMPFAIL)
    return int(gen.number or 0)


def run(func: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: Django set up first, CommandError -> one line + status."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            setup(args)
            return int(func(args) or 0)
        except CommandError as exc:
            print(f"postern: {exc}", file=sys.stderr)
            return exc.status
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback for an admin
            from django.core.exceptions import ValidationError

            if isinstance(exc, ValidationError):
                print(f"postern: {'; '.join(exc.messages)}", file=sys.stderr)
                return EX_DATAERR
            if os.environ.get("POSTERN_DEBUG"):
                raise
            print(f"postern: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EX_SOFTWARE
    return wrapper


def save_form(form: Any, action: str, before: dict[str, Any] | None = None) -> Any:
    """Validate ``form``, save it, audit the change, publish. Returns the object."""
    from django.db import transaction

    from webui.core import changes

    if not form.is_valid():
        raise CommandError(form_error(form), EX_DATAERR)
    with transaction.atomic():
        obj = form.save()
        changes.changed(actor(), "cli", action, obj, before)
    publish()
    return obj


def delete(obj: Any) -> None:
    from webui.core import changes

    changes.delete(actor(), "cli", obj)
    publish()


def superuser() -> Any:
    """The CLI acts with full rights (it runs as the admin on the box)."""
    from django.contrib.auth.models import AnonymousUser

    class CliUser(AnonymousUser):  # type: ignore[misc]
        is_authenticated = True  # type: ignore[assignment]
        is_active = True
        is_superuser = True

        def get_username(self) -> str:
            return actor()

    return CliUser()
