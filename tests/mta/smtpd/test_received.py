"""The Received: line (golden text, no header injection) and the streamed hop counter."""

from __future__ import annotations

import email

from hypothesis import given
from hypothesis import strategies as st

from mta.smtpd.received import MAX_HOPS, HopCounter, received_line

NOW = 1_700_000_000.0


def test_received_golden() -> None:
    assert received_line(helo="client.test", ip="192.0.2.1", me="mx.test", esmtp=True,
                         tls="TLSv1.3:TLS_AES_256_GCM_SHA384", authenticated=True,
                         now=NOW) == (
        b"Received: from client.test ([192.0.2.1])\r\n"
        b"\tby mx.test (Postern) with ESMTPSA (TLSv1.3:TLS_AES_256_GCM_SHA384);\r\n"
        b"\tTue, 14 Nov 2023 22:13:20 -0000\r\n")
    assert received_line(helo=None, ip="2001:db8::1", me="mx.test", esmtp=False, tls=None,
                         now=NOW).startswith(b"Received: from unknown ([IPv6:2001:db8::1])\r\n"
                                             b"\tby mx.test (Postern) with SMTP;")


@given(st.text(max_size=80))
def test_helo_cannot_inject_headers(helo: str) -> None:
    line = received_line(helo=helo, ip="192.0.2.1", me="mx.test", esmtp=True, tls=None,
                         user=helo or None, now=NOW)
    msg = email.message_from_bytes(line + b"Subject: s\r\n\r\nbody\r\n")
    assert list(msg.keys()) == ["Received", "Subject"]
    assert line.count(b"\r\n") == line.count(b"\r\n\t") + 1


def feed_all(data: bytes, step: int) -> HopCounter:
    h = HopCounter()
    for i in range(0, len(data), step):
        h.feed(data[i:i + step])
    return h


@given(st.integers(0, 120), st.integers(1, 50))
def test_hops_counted_in_header_only(n: int, step: int) -> None:
    header = b"".join(b"Received: from h%d\r\n\t by x\r\nDelivered-To: a@b\r\n" % i
                      for i in range(n))
    msg = header + b"Received-SPF: pass\r\nX-Received: y\r\n\r\nReceived: body\r\n" * 2
    h = feed_all(msg, step)
    assert h.hops == 2 * n
    assert h.looping is (2 * n >= MAX_HOPS)
