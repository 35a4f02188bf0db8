"""queue/info: round trip, strict decoding, never crashes on junk."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.send.info import InfoError, MessageInfo, Rcpt, decode

QID = "6565A1B20000A1F"


def sample() -> MessageInfo:
    return MessageInfo(QID, 1_700_000_000, "a@b.example", "network", 1234, ["SMTPUTF8"],
                       [Rcpt("x@example.com", "joe@example.com", "local"),
                        Rcpt("y@r.example", "y@r.example", "remote", "pending", 1_700_000_400, 1,
                             "4.4.1 connection refused"),
                        Rcpt("z@example.com", "z@example.com", "local", "failed", 0, 0,
                             "5.1.1 no such mailbox", True)])


def test_round_trip() -> None:
    info = sample()
    assert decode(info.encode(), QID) == info


def test_finished() -> None:
    info = sample()
    assert not info.finished
    for r in info.rcpts:
        r.state, r.reported = "delivered", False
    assert info.finished
    info.rcpts[0].state = "failed"
    assert not info.finished


@pytest.mark.parametrize("mutate", [
    lambda o: o.update(v=2), lambda o: o.update(id="OTHER"), lambda o: o.update(birth=-1),
    lambda o: o.update(birth=True), lambda o: o.update(rcpts=[]),
    lambda o: o["rcpts"][0].update(state="weird"), lambda o: o["rcpts"][0].update(route="x"),
    lambda o: o["rcpts"][0].update(last="a\nb"), lambda o: o["rcpts"][0].update(addr="noat"),
    lambda o: o["rcpts"][0].update(reported=1), lambda o: o.update(params=["A B"]),
])
def test_strict_decoding(mutate) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads(sample().encode())
    mutate(obj)
    with pytest.raises(InfoError):
        decode(json.dumps(obj).encode(), QID)


@given(st.binary(max_size=300))
def test_never_crashes(data: bytes) -> None:
    try:
        decode(data, QID)
    except InfoError:
        pass
