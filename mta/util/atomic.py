"""Durable file writes: temp file, fsync, rename, fsync the directory.

Used by every writer of files another process reads (control files, queue files, Maildirs).
Trusts its callers; the paths it is given were built from configured names, never from
client bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

FILE_MODE = 0o644


def unlink_logged(path: str | os.PathLike[str], log: logging.Logger, *,
                  dir_fd: int | None = None, shown: object = None) -> None:
    """Remove ``path`` (relative to ``dir_fd`` if given) if it is there; any other error is
    logged on ``log`` (naming the file as ``shown``, if given), never raised (for cleanups
    after a failure, where the first error is the one to report)."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove %s: %s", path if shown is None else shown, exc)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename or unlink in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = FILE_MODE, *,
                 owner: int = -1, group: int = -1) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half.

    Writes ``.<name>.<random>.tmp`` beside it, fsyncs, renames over, fsyncs the directory.
    ``owner``/``group`` (-1: unchanged) are set on the temp file before the rename, so the
    file never appears with the wrong ones (a group needs membership, an owner needs root).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if owner != -1 or group != -1:
                os.fchown(fd, owner, group)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)
