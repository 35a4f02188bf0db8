"""Bounces: RFC 3464 delivery status notifications, and who gets them.

One job: given a message's delivery state and its newly failed recipients, decide where the
notification goes (the sender; ``doublebounceto`` when the sender was ``<>``; nowhere when a
double bounce itself failed: dropped and logged) and build the DSN text. Pure: the caller
(``service.py``) reads the original message and injects the result through queue.sock with
origin=bounce and envelope sender ``<>``.

The DSN is ``multipart/report; report-type=delivery-status`` (RFC 6522) with a plain-words
part, a ``message/delivery-status`` part (RFC 3464 §2: per-message and per-recipient fields,
RFC 3463 status codes) and the original message (``message/rfc822``) when it is at most
``BODY_LIMIT`` bytes, else only its header (``text/rfc822-headers``). A double bounce is
marked with the envelope parameter ``BOUNCE=double`` so its own failure is never bounced
again (no bounce loops). Untrusted: every address and remote text placed in the DSN
(control characters were refused upstream; we refuse them again and fold nothing).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, Literal

from mta.send.info import MessageInfo, Rcpt

BODY_LIMIT: Final = 50_000       # bytes of original returned whole (Postfix bounce_size_limit)
HEADER_LIMIT: Final = 256 * 1024  # bytes of original header returned at most
DOUBLE_PARAM: Final = "BOUNCE=double"
_STATUS = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
_CTL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BouncePlan:
    kind: Literal["bounce", "double", "drop"]
    recipient: str  # envelope recipient of the DSN ("" for drop)


def plan(info: MessageInfo, *, doublebounceto: str) -> BouncePlan:
    """Where the failure notice for ``info`` goes (qmail-send's addbounce rules)."""
    if DOUBLE_PARAM in info.params:
        return BouncePlan("drop", "")
    if info.sender == "":
        return BouncePlan("double", doublebounceto)
    return BouncePlan("bounce", info.sender)


def status_of(rcpt: Rcpt) -> str:
    """The RFC 3463 code of a failed recipient (class 5: this is a final failure)."""
    m = _STATUS.match(rcpt.last)
    if not m:
        return "5.0.0"
    return f"5.{m.group(2)}.{m.group(3)}"


def _clean(text: str) -> str:
    return _CTL.sub(" ", text)


def _headers_of(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    head = original if end < 0 else original[:end + 2]
    return head[:HEADER_LIMIT]


def build_dsn(info: MessageInfo, failed: list[Rcpt], original: bytes, *, plan_: BouncePlan,
              bouncefrom: str, bouncehost: str, now: float,
              whole_original: bool) -> bytes:
    """The DSN message bytes, CRLF line ends. ``original`` is the stored message (or its
    first part when it is over ``BODY_LIMIT``; then ``whole_original`` is False)."""
    boundary = f"postern-{secrets.token_hex(12)}"
    date = formatdate(now, usegmt=True)
    frm = f"{bouncefrom}@{bouncehost}"
    subject = ("Undelivered Mail Returned to Sender" if plan_.kind == "bounce"
               else "Postmaster notify: undeliverable bounce")
    lines = [
        f"From: Mail Delivery System <{_clean(frm)}>",
        f"To: <{_clean(plan_.recipient)}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{info.id}.{secrets.token_hex(6)}@{_clean(bouncehost)}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {_clean(bouncehost)}.",
        "",
    ]
    if plan_.kind == "double":
        lines += ["A failure notice could not be delivered to its recipient "
                  f"<{_clean(info.sender) or ''}>. The notice and the reason are below.", ""]
    lines += ["I could not deliver your message to the following "
              + ("address." if len(failed) == 1 else "addresses."),
              "This is a permanent error; I have given up. Sorry it did not work out.", ""]
    for r in failed:
        lines.append(f"<{_clean(r.addr)}>: {_clean(r.last) or 'delivery failed'}")
        if r.orcpt != r.addr:
            lines.append(f"    (sent to <{_clean(r.orcpt)}>)")
    lines += ["", f"--{boundary}", "Content-Description: Delivery report",
              "Content-Type: message/delivery-status", "",
              f"Reporting-MTA: dns; {_clean(bouncehost)}",
              f"X-Postern-Queue-ID: {info.id}",
              f"Arrival-Date: {formatdate(info.birth, usegmt=True)}"]
    for r in failed:
        lines += ["", f"Final-Recipient: rfc822; {_clean(r.addr)}"]
        if r.orcpt != r.addr:
            lines.append(f"Original-Recipient: rfc822; {_clean(r.orcpt)}")
        lines += ["Action: failed", f"Status: {status_of(r)}",
                  f"Diagnostic-Code: X-Postern; {_clean(r.last)[:900]}",
                  f"Last-Attempt-Date: {date}"]
    ctype = "message/rfc822" if whole_original else "text/rfc822-headers"
    lines += ["", f"--{boundary}",
              f"Content-Description: {'Undelivered message' if whole_original else 'Undelivered message headers'}",
              f"Content-Type: {ctype}", ""]
    body = original if whole_original else _headers_of(original)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode()
    return "\r\n".join(lines).encode("utf-8") + b"\r\n" + body + tail
