"""Maildir delivery exactly as maildir(5), with Maildir++ quota and path safety.

One job: put one queued message into one configured mailbox's ``new/``, durably, or say
why not (temporary or permanent). Called by ``mta/local/server.py``, phase by phase.

Steps (maildir(5)): create a unique name in ``tmp/`` with ``O_CREAT|O_EXCL|O_NOFOLLOW``;
write ``Return-Path:`` and ``Delivered-To:`` then the message with CRLF turned into LF;
``fsync``; close; ``link`` into ``new/``; unlink the ``tmp/`` name; ``fsync`` ``new/``.
Only after that is the recipient reported delivered. With ``syncs`` (the local daemon
passes its ``GroupSyncs``) the two fsyncs are group commits instead: one ``syncfs`` of the
Maildir's filesystem before the link, one after, each shared by every delivery waiting at
that step (``mta/util/groupsync.py``) — the same order, one flush per group.
A Maildir is made on its first delivery, whole: its ``tmp``, ``new`` and ``cur`` are made
in a staging directory renamed into place, so no reader sees a mailbox without them.

Trust: the Maildir path comes only from a ``Mailbox`` found in the ``mailboxes`` file (whose
parser refuses ``/``, leading dots and control characters), never from client bytes. Every
component is opened relative to a directory descriptor with ``O_NOFOLLOW``, so a symlinked
domain, mailbox, ``tmp``, ``new`` or ``cur`` is refused (temporary failure, logged). The
message file is read-only; its headers are only scanned for our own ``Delivered-To:`` (loop
detection, RFC 5598 §4.3 style), never interpreted otherwise.

Quota (Maildir++, as Courier and Dovecot keep it): ``maildirsize`` in the Maildir holds the
limit line ``<bytes>S`` then ``<bytes> <count>`` lines appended per delivery; it is
recomputed from ``new/`` and ``cur/`` when missing, stale (other limit) or over
``MAILDIRSIZE_MAX`` bytes. A delivery that would exceed the limit is a temporary failure
(4.2.2): the sender learns of it only when the queue lifetime ends.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from mta.common.addressbook import Mailbox
from mta.common.results import Outcome, Result
from mta.util.atomic import unlink_logged
from mta.util.groupsync import GroupSync, GroupSyncs

log = logging.getLogger("postern.local")

CHUNK: Final = 64 * 1024   # under malloc's mmap threshold: no mmap/munmap per read
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
MAILDIRSIZE: Final = "maildirsize"
MAILDIR_PARTS: Final = ("tmp", "new", "cur")   # maildir(5)
MAILDIRSIZE_MAX: Final = 5120        # Maildir++ spec: recalculate beyond this size
MAX_HEADER_SCAN: Final = 1024 * 1024  # bytes of header scanned for Delivered-To loops
_SIZE_IN_NAME = re.compile(r",S=([0-9]{1,20})")
_counter = itertools.count()
# The R part of a name: unpredictable enough beside pid, counter and time (uniqueness comes
# from those and O_EXCL), from a generator seeded once by the kernel, not a syscall a name.
_random = random.Random(secrets.randbits(128))
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


class MaildirError(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.text)
        self.result = result


def _temp(enhanced: str, text: str) -> MaildirError:
    return MaildirError(Result(Outcome.TEMPORARY, f"{enhanced} {text}", enhanced))


def _perm(enhanced: str, text: str) -> MaildirError:
    return MaildirError(Result(Outcome.PERMANENT, f"{enhanced} {text}", enhanced))


def unique_name(size: int) -> str:
    """``<sec>.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>`` (maildir(5) modern form)."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return (f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{_random.getrandbits(64):016x}"
            f".{_HOST},S={size}")


def _mkdir(name: str, dir_fd: int) -> None:
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass            # made by a delivery in another thread just now


def _make_maildir(name: str, dir_fd: int) -> None:
    """Make the Maildir ``name`` whole or not at all: ``tmp``, ``new`` and ``cur`` are made
    in a staging directory renamed into place, so a reader (Dovecot, an MUA) never sees the
    mailbox without its three parts. A dot name cannot be a mailbox (the ``mailboxes``
    parser refuses leading dots); a crash can leave only an empty staging tree. If another
    delivery made the Maildir first, the staging tree is removed and theirs is used."""
    staging = f".postern-new-{name}.{os.getpid()}.{next(_counter)}"
    try:
        os.mkdir(staging, DIR_MODE, dir_fd=dir_fd)
        for sub in MAILDIR_PARTS:
            os.mkdir(f"{staging}/{sub}", DIR_MODE, dir_fd=dir_fd)
        try:
            os.rename(staging, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            staging = ""
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        if staging:     # not renamed: another delivery's Maildir won, or an error
            for sub in MAILDIR_PARTS:
                with contextlib.suppress(OSError):
                    os.rmdir(f"{staging}/{sub}", dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                os.rmdir(staging, dir_fd=dir_fd)


def _open_dir(name: str, dir_fd: int,
              make: Callable[[str, int], None] | None = _mkdir) -> int:
    """Open ``name`` under ``dir_fd`` (never through a symlink), made first by ``make`` if
    it is missing: the open is tried first, the Maildir exists on all but one delivery."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if make is None:
                raise
        make(name, dir_fd)
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            log.error("refusing mailbox path component %r: a symlink or not a directory", name)
            raise _temp("4.3.0", f"mailbox directory {name!r} is a symlink or not a "
                                 "directory; refused") from exc
        raise _temp("4.3.0", f"cannot open mailbox directory {name!r}: {exc.strerror}") from exc


def open_maildir(mail_root: str | os.PathLike[str], mailbox: Mailbox) -> dict[str, int]:
    """Open (creating on first delivery) mail/<domain>/<local>/{tmp,new,cur}; fds by name."""
    fds: dict[str, int] = {}
    try:
        root = os.open(mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _temp("4.3.0", f"cannot open the mail directory: {exc.strerror}") from exc
    try:
        dom = _open_dir(mailbox.domain, root)
        try:
            fds["."] = _open_dir(mailbox.local, dom, _make_maildir)
        finally:
            os.close(dom)
        for sub in MAILDIR_PARTS:   # created if an admin's Maildir lacks one
            fds[sub] = _open_dir(sub, fds["."])
        return fds
    except BaseException:
        close_all(fds)
        raise
    finally:
        os.close(root)


def close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def crlf_to_lf(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """CRLF -> LF over a stream of chunks (a CR at a chunk's end waits for the next)."""
    pending = b""
    for chunk in chunks:
        data = pending + chunk
        pending = b""
        if data.endswith(b"\r"):
            data, pending = data[:-1], b"\r"
        yield data.replace(b"\r\n", b"\n")
    if pending:
        yield pending


def read_chunks(fd: int) -> Iterator[bytes]:
    """The whole file on ``fd`` from its start (``pread``: the offset is not touched)."""
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        offset += len(chunk)
        yield chunk


def has_delivered_to(fd: int, recipient: str) -> bool:
    """Whether the message's header already holds ``Delivered-To: <recipient>`` (a loop)."""
    head = b""
    while len(head) < MAX_HEADER_SCAN and b"\r\n\r\n" not in head:
        chunk = os.pread(fd, CHUNK, len(head))   # a small message: one read
        if not chunk:
            break
        head += chunk
    head = head[:MAX_HEADER_SCAN]
    end = head.find(b"\r\n\r\n")
    header = head if end < 0 else head[:end + 2]
    want = recipient.encode("utf-8").lower()
    for line in header.split(b"\r\n"):
        if line[:13].lower() == b"delivered-to:" and line[13:].strip().lower() == want:
            return True
    return False


# --- quota ----------------------------------------------------------------------------

def _scan_usage(fds: dict[str, int]) -> tuple[int, int]:
    total = count = 0
    for sub in ("new", "cur"):
        for entry in os.scandir(fds[sub]):
            if entry.name.startswith("."):
                continue
            m = _SIZE_IN_NAME.search(entry.name)
            if m:
                total += int(m.group(1))
            else:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
            count += 1
    return total, count


def quota_usage(fds: dict[str, int], quota: int) -> int:
    """Bytes in use per maildirsize; rebuilt from new/ and cur/ when missing or stale."""
    try:
        fd = os.open(MAILDIRSIZE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds["."])
        try:
            data = os.read(fd, MAILDIRSIZE_MAX + 1)
        finally:
            os.close(fd)
        lines = data.decode("ascii").splitlines()
        if len(data) <= MAILDIRSIZE_MAX and lines and lines[0] == f"{quota}S":
            used = 0
            for line in lines[1:]:
                m = re.fullmatch(r"(-?[0-9]{1,20}) (-?[0-9]{1,20})", line.strip())
                if m is None:
                    raise ValueError("bad maildirsize line")
                used += int(m.group(1))
            return max(used, 0)
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    used, count = _scan_usage(fds)
    tmp = f"{MAILDIRSIZE}.{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE, dir_fd=fds["tmp"])
    try:
        os.write(fd, f"{quota}S\n{used} {count}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, MAILDIRSIZE, src_dir_fd=fds["tmp"], dst_dir_fd=fds["."])
    return used


def sync_quota(mail_root: str | os.PathLike[str], mailbox: Mailbox) -> bool:
    """Make an existing Maildir's ``maildirsize`` state the configured quota, or remove it.

    Dovecot reports (and enforces on IMAP APPEND) the limit in ``maildirsize``; without this a
    changed or removed quota would only reach it at the next delivery. A Maildir that does not
    exist yet is left alone (delivery creates it). Returns whether anything was changed.

    Raises:
        MaildirError: a symlinked or unreadable path component (refused, as for delivery).
    """
    if not os.path.lexists(os.path.join(mail_root, mailbox.domain, mailbox.local)):
        return False
    root = os.open(mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds: dict[str, int] = {}
    try:
        dom = _open_dir(mailbox.domain, root, None)  # refuses symlinks
        try:
            fds["."] = _open_dir(mailbox.local, dom, None)
        finally:
            os.close(dom)
        if not mailbox.quota:
            try:
                os.unlink(MAILDIRSIZE, dir_fd=fds["."])
            except FileNotFoundError:
                return False
            return True
        for sub in MAILDIR_PARTS:   # created if an admin's Maildir lacks one
            fds[sub] = _open_dir(sub, fds["."])
        before = _read_header(fds["."])
        quota_usage(fds, mailbox.quota)  # rewrites the file when its header is not the quota
        return before != f"{mailbox.quota}S"
    finally:
        close_all(fds)
        os.close(root)


def _read_header(maildir_fd: int) -> str | None:
    try:
        fd = os.open(MAILDIRSIZE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=maildir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 64).split(b"\n", 1)[0].decode("ascii", "replace")
    finally:
        os.close(fd)


def _quota_add(fds: dict[str, int], size: int) -> None:
    try:
        fd = os.open(MAILDIRSIZE, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=fds["."])
    except OSError:
        return  # rebuilt from the directory at the next delivery
    try:
        os.write(fd, f"{size} 1\n".encode("ascii"))
    finally:
        os.close(fd)


# --- delivery -------------------------------------------------------------------------
#
# Three phases, so that the local daemon can wait for its two flushes without a thread:
# ``begin`` (checks, quota, the file in tmp/), ``publish`` (its name into new/), ``finish``
# (quota count, the result). ``deliver`` runs them with blocking flushes between.

@dataclass
class Draft:
    """A message written to a Maildir's ``tmp/``, not yet in ``new/``. Owns ``fds``."""
    mailbox: Mailbox
    fds: dict[str, int]
    tmp_name: str
    size: int
    name: str = ""

    def abandon(self) -> None:
        """Remove the tmp/ file and close the Maildir (a flush failed before ``publish``)."""
        if "tmp" in self.fds:
            unlink_logged(self.tmp_name, log, dir_fd=self.fds["tmp"])
        self.close()

    def close(self) -> None:
        close_all(self.fds)     # idempotent: close_all empties the dict


def failure(mailbox: Mailbox, exc: BaseException) -> Result:
    """The temporary or permanent result for an error raised by a phase."""
    if isinstance(exc, MaildirError):
        return exc.result
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return Result(Outcome.TEMPORARY, "4.3.1 mail system full", "4.3.1")
        log.error("delivery to %s failed: %s", mailbox.address, exc)
        return Result(Outcome.TEMPORARY, f"4.3.0 cannot write the mailbox: {exc.strerror}",
                      "4.3.0")
    raise exc


def begin(mail_root: str | os.PathLike[str], mailbox: Mailbox, message_fd: int,
          sender: str, recipient: str, *, fsync: bool) -> Draft | Result:
    """Write the message open on ``message_fd`` (CRLF, as stored) into ``tmp/`` with its
    ``Return-Path:`` and ``Delivered-To:`` lines, CRLF turned into LF; ``fsync`` it when
    asked (no group commit). A Result when refused or failed (nothing left behind)."""
    try:
        return _begin(mail_root, mailbox, message_fd, sender, recipient, fsync)
    except (MaildirError, OSError) as exc:
        return failure(mailbox, exc)


def _begin(mail_root: str | os.PathLike[str], mailbox: Mailbox, message_fd: int,
           sender: str, recipient: str, fsync: bool) -> Draft:
    if has_delivered_to(message_fd, recipient):
        raise _perm("5.4.6", f"mail loop: the message already has Delivered-To: {recipient}")
    head = f"Return-Path: <{sender}>\nDelivered-To: {recipient}\n".encode("utf-8")
    if any(c in head[:-1].replace(b"\n", b"") for c in (b"\r", b"\0")):
        raise _perm("5.6.0", "control characters in an address")
    fds = open_maildir(mail_root, mailbox)
    try:
        # The size in the name must be the size on disk: count while converting.
        if mailbox.quota:
            used = quota_usage(fds, mailbox.quota)
            if used + os.fstat(message_fd).st_size > mailbox.quota:
                raise _temp("4.2.2", f"mailbox {mailbox.address} is over quota "
                                     f"({used} of {mailbox.quota} bytes used)")
        tmp_name = unique_name(0) + ".tmp"
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, FILE_MODE, dir_fd=fds["tmp"])
        size = 0
        try:
            for data in itertools.chain([head], crlf_to_lf(read_chunks(message_fd))):
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                size += len(data)
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp_name, dir_fd=fds["tmp"])
            raise
        os.close(fd)
        return Draft(mailbox, fds, tmp_name, size)
    except BaseException:
        close_all(fds)
        raise


def publish(draft: Draft) -> Result | None:
    """Link the (durable) tmp/ file into ``new/`` and unlink its tmp/ name; None when done,
    else the failure (the Maildir closed)."""
    name = draft.tmp_name[:-4].rsplit(",S=", 1)[0] + f",S={draft.size}"
    try:
        try:
            os.link(draft.tmp_name, name, src_dir_fd=draft.fds["tmp"],
                    dst_dir_fd=draft.fds["new"], follow_symlinks=False)
        finally:
            os.unlink(draft.tmp_name, dir_fd=draft.fds["tmp"])
    except OSError as exc:
        draft.close()
        return failure(draft.mailbox, exc)
    draft.name = name
    return None


def finish(draft: Draft) -> Result:
    """After ``new/`` is durable: count the quota, close the Maildir, report delivered."""
    try:
        if draft.mailbox.quota:
            _quota_add(draft.fds, draft.size)
    finally:
        draft.close()
    return Result(Outcome.DELIVERED,
                  f"2.0.0 delivered to {draft.mailbox.address} as {draft.name}", "2.0.0")


async def complete(draft: Draft, group: GroupSync) -> Result:
    """The flushes around ``publish`` awaited on a loop (the local daemon): ``deliver``'s
    order with ``group``'s ``wait()`` for its ``sync()``."""
    try:
        await group.wait()            # the data, before its name appears in new/
    except OSError as exc:
        draft.abandon()
        return failure(draft.mailbox, exc)
    failed = publish(draft)
    if failed is not None:
        return failed
    try:
        await group.wait()            # the new/ entry
    except OSError as exc:
        draft.close()                 # in new/, not known durable: send retries
        return failure(draft.mailbox, exc)
    return finish(draft)


def deliver(mail_root: str | os.PathLike[str], mailbox: Mailbox, message_fd: int,
            sender: str, recipient: str, *, syncs: GroupSyncs | None = None) -> Result:
    """Deliver the message open on ``message_fd`` (CRLF, as stored) to ``mailbox``, blocking.

    ``sender`` is the envelope sender ("" for <>), ``recipient`` the address for the
    ``Delivered-To:`` line. Returns DELIVERED only after the data and ``new/`` are durable:
    ``fsync``s, or with ``syncs`` one group commit before the link and one after.
    """
    draft = begin(mail_root, mailbox, message_fd, sender, recipient, fsync=syncs is None)
    if isinstance(draft, Result):
        return draft
    group = syncs.for_fd(draft.fds["new"]) if syncs is not None else None
    try:
        if group is not None:
            group.sync()              # the data, before its name appears in new/
    except OSError as exc:
        draft.abandon()
        return failure(mailbox, exc)
    failed = publish(draft)
    if failed is not None:
        return failed
    try:
        if group is not None:
            group.sync()              # the new/ entry
        else:
            os.fsync(draft.fds["new"])
    except OSError as exc:
        draft.close()
        return failure(mailbox, exc)
    return finish(draft)
