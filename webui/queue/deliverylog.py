"""Search the delivery log (log/delivery.log and its rotated files, JSON lines written by
queue and send through mta/common/deliverylog.py) by sender, recipient, queue id, event and
time. Read-only. Lines are untrusted: a line that is not a JSON object is skipped; values
are shown escaped by the templates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mta.common.deliverylog import KEEP, LOG_NAME

MAX_RESULTS = 500
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class LogQuery:
    sender: str = ""
    recipient: str = ""
    sender_ids: frozenset[str] = frozenset()  # queue ids whose "received" event matched
    queue_id: str = ""
    event: str = ""
    since: float | None = None
    until: float | None = None

    def matches(self, rec: dict[str, Any]) -> bool:
        t = rec.get("time")
        if not isinstance(t, (int, float)):
            return False
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t > self.until:
            return False
        if self.event and rec.get("event") != self.event:
            return False
        if self.queue_id and self.queue_id.upper() not in str(rec.get("id", "")).upper():
            return False
        if self.sender and self.sender.lower() not in str(rec.get("sender", "")).lower() \
                and str(rec.get("id", "")) not in self.sender_ids:
            return False
        if self.recipient:
            rcpts = rec.get("rcpt") or rec.get("recipients") or ""
            if self.recipient.lower() not in str(rcpts).lower():
                return False
        return True


def _files(log_dir: Path) -> list[Path]:
    base = log_dir / LOG_NAME
    return [base] + [base.with_name(f"{LOG_NAME}.{n}") for n in range(1, KEEP + 1)]


class LogUnreadable(Exception):
    """log/ exists but this process may not read it; ``str()`` says which file and why."""


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except PermissionError as exc:
        raise LogUnreadable(f"this process (uid {os.getuid()}) may not read {path}") from exc
    except OSError:
        return
    with f:
        for raw in f:
            if len(raw) > MAX_LINE:
                continue
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                yield rec


def search(log_dir: Path, query: LogQuery, limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
    """Matching events, newest first, at most ``limit``.

    Only the ``received`` event carries the sender; searching by sender also finds the later
    events (started, delivered, ...) of the same queue ids.
    """
    if query.sender and not query.sender_ids:
        needle = query.sender.lower()
        ids = frozenset(str(r.get("id", "")) for path in _files(log_dir) for r in _records(path)
                        if needle in str(r.get("sender", "")).lower() and r.get("id"))
        if ids:
            from dataclasses import replace

            query = replace(query, sender_ids=ids)
    found: list[dict[str, Any]] = []
    for path in _files(log_dir):  # newest file first
        batch = [r for r in _records(path) if query.matches(r)]
        batch.reverse()
        found.extend(batch)
        if len(found) >= limit:
            break
    return [_display(rec) for rec in found[:limit]]


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _display(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields the page shows, every one present (as text), whatever the line held."""
    return {"when": datetime.fromtimestamp(float(rec["time"]), tz=timezone.utc),
            "event": _text(rec.get("event")), "id": _text(rec.get("id")),
            "sender": _text(rec.get("sender")),
            "rcpt": _text(rec.get("rcpt") or rec.get("recipients")),
            "text": _text(rec.get("text") or rec.get("error") or ""), "raw": rec}
