"""DSNs: RFC 3464 structure read back with the email package, who gets them, size limit."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest

from mta.send.bounce import BODY_LIMIT, DOUBLE_PARAM, build_dsn, plan, status_of
from mta.send.info import MessageInfo, Rcpt

DATA = Path(__file__).resolve().parents[2] / "data" / "bounce"
ORIGINAL = b"Subject: lunch\r\nFrom: a@b.example\r\nMessage-ID: <m1@b.example>\r\n\r\nsee you\r\n"


def info(sender: str = "a@b.example", params: list[str] | None = None) -> MessageInfo:
    return MessageInfo("6565A1B20000A1F", 1_700_000_000, sender, "network", len(ORIGINAL),
                       params or [], [
                           Rcpt("sales@example.com", "joe@example.com", "local", "failed",
                                last="5.2.2 over quota"),
                           Rcpt("x@r.example", "x@r.example", "remote", "failed",
                                last="5.1.1 <x@r.example>: 550 no such user")])


def test_plan_rules() -> None:
    assert plan(info(), doublebounceto="postmaster@mx").kind == "bounce"
    p = plan(info(sender=""), doublebounceto="postmaster@mx")
    assert (p.kind, p.recipient) == ("double", "postmaster@mx")
    assert plan(info(sender="", params=[DOUBLE_PARAM]), doublebounceto="p@mx").kind == "drop"


def test_status_code_is_always_final() -> None:
    assert status_of(Rcpt("a", "a@b", "local", "failed", last="4.2.2 full")) == "5.2.2"
    assert status_of(Rcpt("a", "a@b", "local", "failed", last="oops")) == "5.0.0"


def normalise(dsn: bytes) -> bytes:
    dsn = re.sub(rb"postern-[0-9a-f]{24}", b"BOUNDARY", dsn)
    return re.sub(rb"<6565A1B20000A1F\.[0-9a-f]{12}@", b"<ID@", dsn)


def test_dsn_golden_and_structure() -> None:
    i = info()
    dsn = build_dsn(i, i.rcpts, ORIGINAL, plan_=plan(i, doublebounceto="p@mx"),
                    bouncefrom="MAILER-DAEMON", bouncehost="mx.example.com",
                    now=1_700_000_100, whole_original=True)
    assert b"\n" not in dsn.replace(b"\r\n", b"")
    golden = DATA / "dsn.ref"
    assert normalise(dsn) == golden.read_bytes()
    msg = email.message_from_bytes(dsn, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.com"
    text, report, original = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert report.get_content_type() == "message/delivery-status"
    blocks = report.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.com"
    per = blocks[1:]
    assert [b["Final-Recipient"] for b in per] == ["rfc822; joe@example.com", "rfc822; x@r.example"]
    assert per[0]["Original-Recipient"] == "rfc822; sales@example.com"
    assert [b["Status"] for b in per] == ["5.2.2", "5.1.1"]
    assert all(b["Action"] == "failed" for b in per)
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Subject"] == "lunch"


def test_big_message_returns_headers_only() -> None:
    big = ORIGINAL + b"x" * (BODY_LIMIT + 10) + b"\r\n"
    i = info()
    dsn = build_dsn(i, i.rcpts[:1], big, plan_=plan(i, doublebounceto="p@mx"),
                    bouncefrom="MAILER-DAEMON", bouncehost="mx", now=0, whole_original=False)
    msg = email.message_from_bytes(dsn, policy=email.policy.default)
    part = msg.get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert b"xxxx" not in dsn and b"Subject: lunch" in dsn


@pytest.mark.parametrize("evil", ["a\r\nBcc: x@y", "a\x00b"])
def test_control_characters_never_reach_the_dsn_header(evil: str) -> None:
    i = info()
    i.rcpts[0].last = evil
    dsn = build_dsn(i, i.rcpts, ORIGINAL, plan_=plan(i, doublebounceto="p@mx"),
                    bouncefrom="MAILER-DAEMON", bouncehost="mx", now=0, whole_original=True)
    assert b"\r\nBcc:" not in dsn and b"\x00" not in dsn
