"""Publish the database as control files: render every file, validate each with the
daemons' parsers, then write them all atomically (temp, fsync, rename; the generation stamp
last). Nothing is written unless every file is valid, so the daemons never see a half-made
set; a crash between two renames leaves the old generation stamp, and the next publish
(``publish_if_stale`` runs every minute) completes the set. Reruns with nothing changed write
nothing (Celery ``acks_late`` makes a rerun possible).

Called by the Celery task and by the CLI (``postern publish`` and every subcommand that
changes something). Writes ``control/`` (the worker user owns it); one publish at a time
(an flock on ``control/.publish.lock``).
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from mta.common import ipc
from mta.util.atomic import fsync_dir, write_atomic
from webui.publish.models import Generation
from webui.publish.render import GENERATION_FILE, RenderError, render_all, render_generation
from webui.publish.snapshot import read_snapshot
from webui.publish.validate import InvalidPublish, validate

log = logging.getLogger("postern.publish")
LOCK_NAME = ".publish.lock"
# relayauth: readable by remote only (contracts); passwd: smtpd and Dovecot read it.
FILE_MODES = {"relayauth": 0o600, "passwd": 0o640}
# Privilege-separated (the groups exist, docs/internals.md "Permissions"): each secret goes
# to its one reader's group, mode 0640; otherwise (one user runs everything) FILE_MODES.
SECRET_READERS = {"relayauth": ipc.DAEMON_USERS[ipc.Daemon.REMOTE],
                  "passwd": ipc.DAEMON_USERS[ipc.Daemon.SMTPD]}


def _ownership(control: Path, name: str) -> tuple[int, int, int]:
    """(owner, group, mode) for a published file. Run as root (an admin at the CLI), files go
    to control/'s owner, so the worker can replace them later; -1 leaves an id as it is."""
    mode = FILE_MODES.get(name, 0o644)
    owner = os.stat(control).st_uid if os.geteuid() == 0 else -1
    group = -1
    reader = SECRET_READERS.get(name)
    if reader is not None:
        try:
            gid = grp.getgrnam(reader).gr_gid
        except KeyError:
            gid = -1
        if gid != -1 and (os.geteuid() == 0 or gid in os.getgroups()):
            group, mode = gid, 0o640
    return owner, group, mode


@contextmanager
def _locked(control: Path) -> Iterator[None]:
    control.mkdir(parents=True, exist_ok=True)
    fd = os.open(control / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if os.geteuid() == 0:  # the worker must be able to take it after an admin ran the CLI
        os.fchown(fd, os.stat(control).st_uid, -1)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _managed_setting_names() -> set[str]:
    from webui.control.registry import SETTINGS

    return {s.name for s in SETTINGS}


def publish(control_dir: Path | None = None) -> Generation:
    """Publish now; returns the ``Generation`` row (``ok`` False with ``error`` if refused)."""
    control = Path(control_dir or settings.POSTERN_CONTROL_DIR)
    with _locked(control):
        snap, version = read_snapshot()
        try:
            files = render_all(snap)
            validate(files)
        except (RenderError, InvalidPublish) as exc:
            log.error("publish refused: %s", exc)
            return Generation.objects.create(config_version=version, ok=False, error=str(exc),
                                             finished=timezone.now())
        hashes = {name: _digest(data) for name, data in files.items()}
        last = Generation.objects.filter(ok=True).order_by("-number").first()
        on_disk = _read_generation(control)
        if last is not None and last.files == hashes and on_disk == last.number \
                and _files_match(control, files):
            if last.config_version < version:
                Generation.objects.filter(pk=last.pk).update(config_version=version)
                last.config_version = version
            return last
        with transaction.atomic():
            number = (Generation.objects.aggregate(n=Max("number"))["n"] or 0) + 1
            number = max(number, (on_disk or 0) + 1)
            gen = Generation.objects.create(number=number, config_version=version, files=hashes)
        try:
            _write(control, files)
            now = timezone.now()
            write_atomic(control / GENERATION_FILE, render_generation(number, now))
        except OSError as exc:
            log.error("publish failed writing %s: %s", control, exc)
            Generation.objects.filter(pk=gen.pk).update(
                number=None, ok=False, error=f"cannot write {control}: {exc}",
                finished=timezone.now())
            gen.refresh_from_db()
            return gen
        Generation.objects.filter(pk=gen.pk).update(ok=True, finished=now)
        gen.refresh_from_db()
        log.info("published generation %d (%d files)", number, len(files))
        return gen


def _read_generation(control: Path) -> int | None:
    try:
        text = (control / GENERATION_FILE).read_text("ascii").split()
        return int(text[0]) if text and text[0].isascii() and text[0].isdigit() else None
    except (OSError, UnicodeDecodeError):
        return None


def _files_match(control: Path, files: dict[str, bytes]) -> bool:
    for name, data in files.items():
        try:
            if (control / name).read_bytes() != data:
                return False
        except OSError:
            return False
    return True


def _advance_mtime(target: Path, old_second: int | None) -> None:
    """Give a rewritten file a later whole-second mtime than the file it replaced.

    Dovecot notices a new passwd-file by (mtime in seconds, size); a password changed within
    the same second as the previous write keeps both, and Dovecot would keep the old hash.
    """
    if old_second is not None and int(target.stat().st_mtime) <= old_second:
        later = old_second + 1
        os.utime(target, (later, later), follow_symlinks=False)


def _write(control: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        target = control / name
        owner, group, mode = _ownership(control, name)
        old_second: int | None = None
        try:
            st = target.stat()
            if target.read_bytes() == data and (st.st_mode & 0o777) == mode and \
                    owner in (-1, st.st_uid) and group in (-1, st.st_gid):
                continue  # unchanged: do not make every daemon reload
            old_second = int(st.st_mtime)
        except OSError:
            pass
        write_atomic(target, data, mode=mode, owner=owner, group=group)
        _advance_mtime(target, old_second)
    # A setting reset to its default: remove its file so the daemons use qmail's default.
    removed = False
    for name in _managed_setting_names() - set(files):
        try:
            (control / name).unlink()
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        fsync_dir(control)
