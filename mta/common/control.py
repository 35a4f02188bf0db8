"""Control files: read, validate, and reload on change; a broken file never takes effect.

Every daemon reads its configuration through ``ControlFile`` objects. Files are written by
the web app's publisher or by an admin with an editor, and are untrusted: each one is
parsed by a strict function that raises ``ControlError`` on anything it does not expect
(control characters, NUL, a CR, an unknown keyword). On a parse error the previous value
stays in force and the error is logged; at first load the file's *fallback* (fail-closed)
value is used instead, and the error is logged loudly.

General syntax, as qmail's (qmail-control(5)): one value per line, trailing spaces and
tabs ignored, ``#`` comment lines where the file allows them, lookups case-insensitive.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("postern.control")

MAX_CONTROL_FILE: Final = 64 * 1024 * 1024  # refuse absurd files instead of reading them
CHECK_INTERVAL: Final = 1.0  # seconds between stat() calls per file (renames: at once)
_BAD_CHARS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # tab and LF are the only controls


class ControlError(ValueError):
    """A control file that does not parse; ``str()`` names the line and the reason."""


def parse_lines(data: bytes, *, name: str = "control file", comments: bool = True) -> list[str]:
    """Split a control file into its non-empty lines, trailing blanks removed.

    Refuses NUL, CR and other control characters anywhere, and invalid UTF-8.
    """
    out: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if _BAD_CHARS.search(raw):
            raise ControlError(f"{name} line {number}: control character (CR, NUL, ...)")
        try:
            line = raw.decode("utf-8").rstrip(" \t")
        except UnicodeDecodeError as exc:
            raise ControlError(f"{name} line {number}: not UTF-8") from exc
        if not line or (comments and line.lstrip().startswith("#")):
            continue
        out.append(line)
    return out


def parse_single(data: bytes, *, name: str = "control file") -> str | None:
    """The first line of a one-value file (``me``, ``helohost``), or ``None`` if empty."""
    lines = parse_lines(data, name=name, comments=False)
    return lines[0].strip() if lines else None


def parse_number(data: bytes, *, name: str = "control file", minimum: int = 0,
                 maximum: int = 2**53) -> int | None:
    """A one-line decimal number (ASCII digits only), or ``None`` for an empty file."""
    text = parse_single(data, name=name)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,16}", text):
        raise ControlError(f"{name}: {text[:40]!r} is not a decimal number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ControlError(f"{name}: {value} is outside {minimum}..{maximum}")
    return value


class Memo(Generic[T]):
    """A value built from several control files of one directory, rebuilt only when needed.

    ``get(build)`` returns the last value while the directory's mtime is unchanged (no file
    in it was replaced by rename) and less than ``check_interval`` seconds have passed, the
    same promise each ``ControlFile`` makes; otherwise it calls ``build()``, which reads the
    files through their own ``ControlFile.get()``. One ``stat`` of the directory per call
    instead of one per file: smtpd builds its settings from 15 files per connection.
    """

    def __init__(self, directory: str | os.PathLike[str], *,
                 check_interval: float = CHECK_INTERVAL) -> None:
        self._dir = str(directory)
        self._interval = check_interval
        self._state: tuple[int | None, float, T] | None = None  # (dir mtime, when, value)

    def get(self, build: Callable[[], T]) -> T:
        try:
            signature: int | None = os.stat(self._dir).st_mtime_ns
        except OSError:
            signature = None
        now = time.monotonic()
        state = self._state
        if state is not None and state[0] == signature and now - state[1] < self._interval \
                and signature is not None:
            return state[2]
        value = build()   # the signature was taken first: a change during the build is seen
        self._state = (signature, now, value)
        return value


class ControlFile(Generic[T]):
    """One control file, parsed, reloaded when its (inode, size, mtime) changes.

    Args:
        path: the file.
        parse: bytes of the file → value; raises ``ControlError`` (or ``ValueError``).
        missing: the value when the file does not exist.
        fallback: the value when the file is broken at first load (fail closed).
            Defaults to ``missing``.
        check_interval: seconds between stat() calls; 0 checks on every ``get()``.
    """

    def __init__(self, path: str | os.PathLike[str], parse: Callable[[bytes], T], *,
                 missing: T, fallback: T | None = None,
                 check_interval: float = CHECK_INTERVAL) -> None:
        self.path = Path(path)
        self._dir = str(self.path.parent)  # stat()ed at every get(): no Path work there
        self._parse = parse
        self._missing = missing
        self._fallback = missing if fallback is None else fallback
        self._interval = check_interval
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None | str = "unread"
        self._checked = float("-inf")
        self._dir_signature: int | None = None
        self._value: T = self._fallback
        self.error: str | None = None
        self.loaded_once = False

    def get(self) -> T:
        """The current value. A file replaced by rename (the publisher, most editors) changes
        its directory's mtime and is seen at once; an in-place edit within ``check_interval``.
        """
        now = time.monotonic()
        if now - self._checked >= self._interval or self._directory_changed():
            with self._lock:
                self._dir_signature = self._directory_signature()
                self._refresh()
                self._checked = now
        return self._value

    def _directory_signature(self) -> int | None:
        try:
            return os.stat(self._dir).st_mtime_ns
        except OSError:
            return None

    def _directory_changed(self) -> bool:
        return self._directory_signature() != self._dir_signature

    def reload(self) -> T:
        """Check the file now, whatever the interval."""
        with self._lock:
            self._dir_signature = self._directory_signature()
            self._refresh()
            self._checked = time.monotonic()
        return self._value

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None:
                self._value, self._signature, self.error = self._missing, None, None
                self.loaded_once = True
            return
        except OSError as exc:
            self._fail(f"cannot stat {self.path}: {exc}")
            return
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature:
            return
        try:
            if st.st_size > MAX_CONTROL_FILE:
                raise ControlError(f"{self.path.name}: larger than {MAX_CONTROL_FILE} bytes")
            data = self.path.read_bytes()
            value = self._parse(data)
        except (ControlError, ValueError, OSError) as exc:
            self._signature = signature  # do not re-log the same broken file every second
            self._fail(f"{self.path}: {exc}")
            return
        self._value, self._signature, self.error = value, signature, None
        if self.loaded_once:
            log.info("reloaded %s", self.path)
        self.loaded_once = True

    def _fail(self, message: str) -> None:
        self.error = message
        if self.loaded_once:
            log.error("refused %s; the previous configuration stays in force", message)
        else:
            self._value = self._fallback
            self.loaded_once = True
            log.critical("refused %s at first load; using the fail-closed default", message)
