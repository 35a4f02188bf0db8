"""The read-only queue window: answers to status.sock requests (summary, list, message).

Served by ``send`` (``service.py`` owns the socket); clients are the web app and
``postern queue`` (``StatusClient`` below). Nothing here writes anything, and no message body
is ever read beyond its header (for Subject/From/Date/Message-ID). Requests are untrusted:
a request that is not a JSON object closes the connection (``StatusProtocolError``); an
unknown verb or a bad field gets an error text (``StatusRequestError``). JSON shapes are
documented in docs/internals.md "status.sock" and are stable.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from mta.common import frames, ipc
from mta.common.queuedirs import QueueIdError, parse_id
from mta.send.info import MessageInfo
from mta.send.scheduler import MESSAGE_STATES, RCPT_STATES, Scheduler

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
HEADER_READ: Final = 64 * 1024
MAX_DOMAINS: Final = 100  # the summary's busiest destination domains
SHOWN_HEADERS: Final = ("subject", "from", "date", "message-id")


class StatusProtocolError(Exception):
    """Not a request at all: close the connection."""


class StatusRequestError(Exception):
    """A request we understand but refuse: answer with ``X`` and this text."""


def message_state(sched: Scheduler, info: MessageInfo) -> str:
    return sched.message_state(info)


def _rcpt(r: Any, *, full: bool) -> dict[str, Any]:
    out = {"address": r.addr, "state": r.state, "route": r.route}
    if full:
        out.update({"original": r.orcpt, "attempts": r.attempts, "last_error":
                    r.last if r.state != "delivered" else "", "last_result": r.last,
                    "next_attempt": r.next if r.state == "pending" else None})
    return out


def _summary_of(sched: Scheduler, info: MessageInfo, now: float) -> dict[str, Any]:
    return {"id": info.id, "birth": info.birth, "age": max(0, int(now) - info.birth),
            "size": info.size, "sender": info.sender, "origin": info.origin,
            "state": message_state(sched, info), "recipient_count": len(info.rcpts),
            "recipients": [_rcpt(r, full=False) for r in info.rcpts[:20]]}


def read_headers(path: os.PathLike[str] | str) -> dict[str, str]:
    """Subject, From, Date, Message-ID of a stored message (first occurrence, unfolded)."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_READ)
    except OSError:
        return {}
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    out: dict[str, str] = {}
    current: str | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            if current in out:
                out[current] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, sep, value = line.partition(b":")
        current = name.strip().lower().decode("ascii", "replace") if sep else None
        if current in SHOWN_HEADERS and current not in out:
            out[current] = value.strip().decode("utf-8", "replace")
        elif current not in SHOWN_HEADERS:
            current = None
    return {k: re.sub(r"[\x00-\x1f\x7f]", " ", v)[:998] for k, v in out.items()}


def _str_field(req: dict[str, Any], key: str) -> str | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > ipc.MAX_ADDRESS:
        raise StatusRequestError(f"{key!r} must be a string of at most {ipc.MAX_ADDRESS} characters")
    return value.lower()


def _int_field(req: dict[str, Any], key: str, default: int, maximum: int) -> int:
    value = req.get(key, default)
    if type(value) is not int or not 0 <= value <= maximum:
        raise StatusRequestError(f"{key!r} must be an integer 0..{maximum}")
    return int(value)


def answer(sched: Scheduler, request: bytes, *, mess_path: Callable[[str], os.PathLike[str]],
           now: float | None = None) -> dict[str, Any]:
    """The answer to one request frame's payload."""
    try:
        req = json.loads(request.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatusProtocolError(f"request is not JSON: {exc}") from exc
    if not isinstance(req, dict) or not isinstance(req.get("verb"), str):
        raise StatusProtocolError("request is not a JSON object with a verb")
    now = time.time() if now is None else now
    verb = req["verb"]
    if verb == "summary":
        return summary(sched, now)
    if verb == "list":
        return listing(sched, req, now)
    if verb == "message":
        raw = req.get("id")
        if not isinstance(raw, str):
            raise StatusRequestError("'id' must be a queue id")
        try:
            qid = str(parse_id(raw))
        except QueueIdError as exc:
            raise StatusRequestError(str(exc)) from exc
        info = sched.messages.get(qid)
        if info is None:
            raise StatusRequestError(f"no message {qid} in the queue")
        out = _summary_of(sched, info, now)
        out.update({"params": info.params, "headers": read_headers(mess_path(qid)),
                    "recipients": [_rcpt(r, full=True) for r in info.rcpts]})
        return {"message": out}
    raise StatusRequestError(f"unknown verb {verb[:40]!r}")


def summary(sched: Scheduler, now: float) -> dict[str, Any]:
    """From the scheduler's running totals: O(domains), not O(queue)."""
    t = sched.totals
    oldest = sched.oldest_birth()
    top = heapq.nsmallest(MAX_DOMAINS, t.pending_domains.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"summary": {
        "messages": t.messages, "states": {s: t.states[s] for s in MESSAGE_STATES},
        "recipients": {s: t.rcpts[s] for s in RCPT_STATES}, "domains": dict(top),
        "total_bytes": t.total_bytes,
        "oldest_age": None if oldest is None else max(0, int(now) - oldest)}}


def _in_birth_order(sched: Scheduler, ids: set[str], want: int) -> list[str]:
    """The first ``want`` of ``ids`` in birth order: sort a small set, or walk the birth index
    (stopping at ``want``) when the set is a big part of the queue."""
    if len(ids) * 8 < len(sched.order):
        msgs = sched.messages
        return sorted(ids, key=lambda q: (msgs[q].birth, q))[:want]
    out: list[str] = []
    if want:
        for _, qid in sched.order:
            if qid in ids:
                out.append(qid)
                if len(out) >= want:
                    break
    return out


def _has_recipient(info: MessageInfo, needle: str) -> bool:
    for r in info.rcpts:
        if needle in r.addr.lower() or (r.orcpt is not r.addr and needle in r.orcpt.lower()):
            return True
    return False


def listing(sched: Scheduler, req: dict[str, Any], now: float) -> dict[str, Any]:
    """A page of messages, oldest first. No filter: a slice of the birth index. ``state`` and
    ``domain``: from the scheduler's id sets (total is a set size; the page sorts the set or
    walks the index only until the page is full). ``sender``/``recipient`` (substrings) test
    the candidates one by one: at most the whole queue, one string test per message
    (docs/internals.md "status.sock")."""
    state = _str_field(req, "state")
    if state is not None and state not in MESSAGE_STATES:
        raise StatusRequestError(f"'state' must be one of {', '.join(MESSAGE_STATES)}")
    sender = _str_field(req, "sender")
    recipient = _str_field(req, "recipient")
    domain = _str_field(req, "domain")
    offset = _int_field(req, "offset", 0, 10**9)
    limit = _int_field(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)

    def page_of(qids: list[str]) -> list[dict[str, Any]]:
        return [_summary_of(sched, sched.messages[q], now) for q in qids]

    if state is None and sender is None and recipient is None and domain is None:
        # the common page: O(limit), whatever the queue's size
        qids = [qid for _, qid in sched.order[offset:offset + limit]]
        return {"total": len(sched.order), "offset": offset, "limit": limit,
                "messages": page_of(qids)}
    sets = []
    if state is not None:
        sets.append(sched.by_state[state])
    if domain is not None:
        sets.append(sched.by_domain.get(domain, set()))
    candidates: set[str] | None = None
    if sets:
        sets.sort(key=len)
        candidates = set(sets[0]) if len(sets) == 1 else sets[0] & sets[1]
    if sender is None and recipient is None:
        cands = candidates if candidates is not None else set()
        qids = _in_birth_order(sched, cands, offset + limit)[offset:]
        return {"total": len(cands), "offset": offset, "limit": limit,
                "messages": page_of(qids)}
    matched: list[str] = []
    source = (sched.order if candidates is None
              else [(0, q) for q in _in_birth_order(sched, candidates, len(candidates))])
    msgs = sched.messages
    for _, qid in source:  # oldest first already
        info = msgs[qid]
        if sender is not None and sender not in info.sender.lower():
            continue
        if recipient is not None and not _has_recipient(info, recipient):
            continue
        matched.append(qid)
    return {"total": len(matched), "offset": offset, "limit": limit,
            "messages": page_of(matched[offset:offset + limit])}


class StatusClient:
    """Blocking client for status.sock (``postern queue``, the web app)."""

    def __init__(self, socket_path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = os.fspath(socket_path)
        self.timeout = timeout

    def request(self, verb: str, **fields: Any) -> dict[str, Any]:
        """Send one request; return the answer, or raise ``StatusRequestError`` / ``OSError``."""
        payload = json.dumps({"verb": verb, **fields}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            s.sendall(frames.encode(ipc.S.REQUEST.value, payload))
            frame = frames.recv_frame(s, ipc.STATUS_SERVER_FRAMES)
        if frame is None:
            raise ConnectionError("status.sock closed the connection")
        if frame.type == ipc.S.ERROR.value:
            raise StatusRequestError(frame.payload.decode("utf-8", "replace"))
        result = json.loads(frame.payload.decode("utf-8"))
        if not isinstance(result, dict):
            raise ConnectionError("status.sock answered something that is not an object")
        return result
