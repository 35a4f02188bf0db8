"""Send's per-message delivery state: the ``queue/info/<N>/<id>`` file, encoded and decoded.

Written only by ``send`` (temp file, fsync, rename via ``mta.util.atomic``), read back by
``send`` after a restart. It is still validated strictly on read, field by field (a file
that does not decode is reported and left alone, never half-used). Format: one JSON object,
documented in docs/internals.md "Delivery state (queue/info)". Every recipient keeps its
state, attempts, last text and its next due time, so the schedule survives a restart and
finished recipients are never tried again.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Final

FORMAT_VERSION: Final = 1
STATES: Final = ("pending", "delivered", "failed")
ROUTES: Final = ("local", "remote")
_TEXT_MAX: Final = 4096
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_PARAM_BAD = re.compile(r"[\x00-\x20\x7f]")


class InfoError(ValueError):
    """An info file that does not decode; ``str()`` says why."""


@dataclass(slots=True)
class Rcpt:
    """One final delivery (after alias expansion) of one original recipient."""

    orcpt: str          # the recipient as given in the envelope (for the DSN)
    addr: str           # where it goes: a mailbox address (local) or a remote address
    route: str          # "local" | "remote"
    state: str = "pending"
    next: int = 0       # unix seconds when due (pending only)
    attempts: int = 0
    last: str = ""      # last worker text, with its enhanced status code
    reported: bool = False  # a failure already in a DSN (or needs none)

    @property
    def domain(self) -> str:
        return self.addr[self.addr.rfind("@") + 1:]


@dataclass(slots=True)
class MessageInfo:
    id: str
    birth: int
    sender: str
    origin: str
    size: int
    params: list[str] = field(default_factory=list)
    rcpts: list[Rcpt] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Every recipient final and every failure reported: clean may remove it."""
        return all(r.state != "pending" and (r.state != "failed" or r.reported)
                   for r in self.rcpts)

    def encode(self) -> bytes:
        obj = {"v": FORMAT_VERSION, "id": self.id, "birth": self.birth, "sender": self.sender,
               "origin": self.origin, "size": self.size, "params": self.params,
               "rcpts": [{"orcpt": r.orcpt, "addr": r.addr, "route": r.route, "state": r.state,
                          "next": r.next, "attempts": r.attempts, "last": r.last,
                          "reported": r.reported} for r in self.rcpts]}
        return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _get(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if type(value) is not kind:  # bool is not int here
        raise InfoError(f"field {key!r} is missing or not {kind.__name__}")
    return value


def _text(obj: dict[str, Any], key: str) -> str:
    value = _get(obj, key, str)
    if len(value) > _TEXT_MAX or _CTL.search(value):
        raise InfoError(f"field {key!r} too long or has control characters")
    return str(value)


def _num(obj: dict[str, Any], key: str) -> int:
    value = _get(obj, key, int)
    if not 0 <= value < 2**53:
        raise InfoError(f"field {key!r} out of range")
    return int(value)


def decode(data: bytes, expected_id: str) -> MessageInfo:
    """Strictly decode an info file; its id must be the one its name says."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InfoError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
        raise InfoError("not a version 1 info object")
    info = MessageInfo(id=_text(obj, "id"), birth=_num(obj, "birth"), sender=_text(obj, "sender"),
                       origin=sys.intern(_text(obj, "origin")), size=_num(obj, "size"))
    if info.id != expected_id:
        raise InfoError(f"file for {expected_id} says it is {info.id!r}")
    params = _get(obj, "params", list)
    rcpts = _get(obj, "rcpts", list)
    if not rcpts:
        raise InfoError("no recipients")
    for p in params:
        if type(p) is not str or _PARAM_BAD.search(p):
            raise InfoError("bad parameter")
        info.params.append(p)
    for r in rcpts:
        if not isinstance(r, dict):
            raise InfoError("recipient is not an object")
        addr, orcpt = _text(r, "addr"), _text(r, "orcpt")
        # interned and shared strings: a queue of 100,000 messages lives in memory
        rc = Rcpt(orcpt=addr if orcpt == addr else orcpt, addr=addr,
                  route=sys.intern(_text(r, "route")), state=sys.intern(_text(r, "state")),
                  next=_num(r, "next"), attempts=_num(r, "attempts"), last=_text(r, "last"),
                  reported=_get(r, "reported", bool))
        if rc.route not in ROUTES or rc.state not in STATES or "@" not in rc.addr:
            raise InfoError(f"bad recipient record {rc.addr!r}")
        info.rcpts.append(rc)
    return info
