"""The queue's layout on disk: the one module that builds a path inside ``queue/``.

Who uses it: the ``queue`` daemon (writes new messages), ``send`` (reads ``todo``, keeps
``info``), ``clean`` (removes finished messages), ``local``/``remote`` (open ``mess``), and
``postern init`` (``create()``). Nobody else joins path strings under ``queue/``.

Untrusted input: a queue id that arrives over a socket (``clean.sock``, ``local.sock``,
``status.sock``) or is read from a directory listing. ``parse_id()`` refuses anything that
is not exactly the form ``make_id()`` writes, so no path is ever built from client bytes.

Layout (docs/internals.md "The queue")::

    queue/split          the number of split subdirectories, decimal, fixed at creation
    queue/lock           flock()ed by the queue daemon: one writer at a time
    queue/tmp/           files being written by the queue daemon (not split)
    queue/mess/<N>/<id>  the message, CRLF line ends
    queue/todo/<N>/<id>  the committed envelope; its rename into todo/ is the commit point
    queue/info/<N>/<id>  send's per-message delivery state (format: SEND's, see internals.md)

A queue id is ``"%08X%05X%X" % (birth seconds, microseconds, inode number)`` of the message
file (upper-case hex); ``N = inode % split``. The inode makes ids unique among messages that
exist at the same time; the birth time makes them unique over time, when inodes are reused.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mta.util.atomic import fsync_dir, write_atomic

DEFAULT_SPLIT: Final = 23   # qmail's conf-split
MAX_SPLIT: Final = 9_999    # more would only make scans slower
DIR_MODE: Final = 0o750     # group: the daemons that read the queue (DESIGN.md "Processes")
SPLIT_FILE: Final = "split"
LOCK_FILE: Final = "lock"
TMP: Final = "tmp"
MESS: Final = "mess"
TODO: Final = "todo"
INFO: Final = "info"
# SEND may add its own kinds here (additive edit). clean removes a finished message's files
# in this order, so INFO must stay last: while it exists, send still knows the message.
SPLIT_KINDS: Final = (MESS, TODO, INFO)

# 8 hex digits of seconds (good until 2106), 5 of microseconds (< 0xF4240), 1..16 of inode.
_ID = re.compile(r"([0-9A-F]{8})([0-9A-F]{5})(0|[1-9A-F][0-9A-F]{0,15})")
MAX_ID_LENGTH: Final = 8 + 5 + 16


class QueueIdError(ValueError):
    """A string that is not a queue id; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class QueueId:
    """A parsed, valid queue id."""

    birth: int         # unix seconds when the message file was created
    microseconds: int  # 0..999999
    inode: int         # the message file's inode number

    def __str__(self) -> str:
        return make_id(self.birth, self.microseconds, self.inode)


def make_id(birth: int, microseconds: int, inode: int) -> str:
    """Format a queue id. Raises ``ValueError`` for values outside the id's fields."""
    if not 0 <= birth <= 0xFFFFFFFF:
        raise ValueError(f"birth time {birth} does not fit 8 hex digits")
    if not 0 <= microseconds <= 999_999:
        raise ValueError(f"microseconds {microseconds} out of range")
    if not 0 <= inode <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"inode {inode} out of range")
    return "%08X%05X%X" % (birth, microseconds, inode)


def parse_id(text: str | bytes) -> QueueId:
    """Validate a queue id exactly as ``make_id()`` writes it; refuse anything else.

    Raises:
        QueueIdError: not a queue id (wrong characters, length, lower case, leading zero
            in the inode part, microseconds over 999999).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise QueueIdError("queue id is not ASCII") from exc
    if len(text) > MAX_ID_LENGTH:
        raise QueueIdError("queue id too long")
    m = _ID.fullmatch(text)
    if m is None:
        raise QueueIdError(f"not a queue id: {text[:40]!r}")
    usec = int(m.group(2), 16)
    if usec > 999_999:
        raise QueueIdError("queue id microseconds out of range")
    return QueueId(int(m.group(1), 16), usec, int(m.group(3), 16))


def parse_split(data: bytes) -> int:
    """The contents of ``queue/split``: one decimal number 1..MAX_SPLIT, optional newline."""
    text = data[:-1] if data.endswith(b"\n") else data
    if not re.fullmatch(rb"[1-9][0-9]{0,3}", text):
        raise ValueError(f"queue/split is not a number 1..{MAX_SPLIT}: {data[:20]!r}")
    value = int(text)
    if value > MAX_SPLIT:
        raise ValueError(f"queue/split {value} exceeds {MAX_SPLIT}")
    return value


def read_split(queue_root: str | os.PathLike[str]) -> int:
    """Read ``queue/split``. Raises ``OSError`` if missing, ``ValueError`` if malformed."""
    return parse_split(Path(queue_root, SPLIT_FILE).read_bytes())


def create(queue_root: str | os.PathLike[str], split: int = DEFAULT_SPLIT) -> "QueueDirs":
    """Create the queue layout; idempotent. An existing ``queue/split`` wins over ``split``.

    Never removes or rewrites anything: the split count is fixed when the queue is first
    created, because moving every file to a new subdirectory is not worth the risk.
    """
    if not 1 <= split <= MAX_SPLIT:
        raise ValueError(f"split must be 1..{MAX_SPLIT}")
    root = Path(queue_root)
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    split_path = root / SPLIT_FILE
    if not split_path.exists():
        write_atomic(split_path, b"%d\n" % split)
    actual = read_split(root)
    dirs = QueueDirs(root, actual)
    created = False
    for path in [root / TMP] + [root / kind for kind in SPLIT_KINDS]:
        if not path.is_dir():
            path.mkdir(mode=DIR_MODE)
            created = True
    for kind in SPLIT_KINDS:
        for n in range(actual):
            sub = root / kind / str(n)
            if not sub.is_dir():
                sub.mkdir(mode=DIR_MODE)
                created = True
    if created:
        for kind in SPLIT_KINDS:
            fsync_dir(root / kind)
        fsync_dir(root)
    return dirs


@dataclass(frozen=True)
class QueueDirs:
    """Path builders for one queue. Every method takes a validated ``QueueId`` or id text."""

    root: Path
    split: int

    @classmethod
    def open(cls, queue_root: str | os.PathLike[str]) -> "QueueDirs":
        """An existing queue (reads ``queue/split``)."""
        return cls(Path(queue_root), read_split(queue_root))

    @functools.cached_property
    def tmp(self) -> Path:
        # Built once, as the split directories are: the queue daemon looks its descriptor
        # up by this path for every message.
        return self.root / TMP

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    def subdir(self, kind: str, n: int) -> Path:
        if kind not in SPLIT_KINDS or not 0 <= n < self.split:
            raise ValueError(f"no such queue directory {kind}/{n}")
        return self._subdirs[kind][n]

    @functools.cached_property
    def _subdirs(self) -> dict[str, tuple[Path, ...]]:
        # Built once: a path per message is on every daemon's hot path, and pathlib's joins
        # cost more than the syscall the path is for.
        return {kind: tuple(self.root / kind / str(n) for n in range(self.split))
                for kind in SPLIT_KINDS}

    def path(self, kind: str, queue_id: QueueId | str) -> Path:
        """``queue/<kind>/<inode % split>/<id>`` for a validated id."""
        qid = queue_id if isinstance(queue_id, QueueId) else parse_id(queue_id)
        return self.subdir(kind, qid.inode % self.split) / str(qid)

    def mess(self, queue_id: QueueId | str) -> Path:
        return self.path(MESS, queue_id)

    def todo(self, queue_id: QueueId | str) -> Path:
        return self.path(TODO, queue_id)

    def info(self, queue_id: QueueId | str) -> Path:
        return self.path(INFO, queue_id)

    def ids(self, kind: str) -> Iterator[QueueId]:
        """Every valid id in ``kind``'s subdirectories (other names are skipped)."""
        for n in range(self.split):
            try:
                names = os.listdir(self.subdir(kind, n))
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    qid = parse_id(name)
                except QueueIdError:
                    continue
                if qid.inode % self.split == n:
                    yield qid
