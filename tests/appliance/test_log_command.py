"""``postern log``: readable lines, control characters escaped, --follow across rotation."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from appliance.commands.log import render, show
from mta.common.deliverylog import DeliveryLog
from tests.support import wait_for


def test_render_escapes_and_orders() -> None:
    line = json.dumps({"time": 0, "event": "deferred", "text": "4.4.1 a\nb", "rcpt": "x@y",
                       "id": "ID", "zzz": "\x1b[31m"})
    out = render(line)
    assert "\n" not in out and "\x1b" not in out
    assert out.index("id=ID") < out.index("rcpt=x@y") < out.index("text=")
    assert "\\x1b" in out
    assert render("garbage\x07\n") == "garbage\\x07"


def test_show_and_last(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path)
    for i in range(5):
        log.event("delivered", id=f"M{i}", rcpt="a@b")
    out = io.StringIO()
    assert show(tmp_path / "delivery.log", follow=False, raw=False, last=2, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "id=M3" in lines[0] and "id=M4" in lines[1]
    assert show(tmp_path / "missing.log", follow=False, raw=False, last=0, out=out) == 1


def test_follow_sees_new_events_and_rotation(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path, max_bytes=300)
    log.event("received", id="FIRST")
    out = io.StringIO()
    done = threading.Event()
    t = threading.Thread(target=show, args=(tmp_path / "delivery.log",),
                         kwargs={"follow": True, "raw": False, "last": 0, "out": out,
                                 "poll": 0.01, "stop": done.is_set})
    t.start()
    try:
        wait_for(lambda: "FIRST" in out.getvalue(), what="first event")
        for i in range(10):  # enough to rotate several times
            log.event("delivered", id=f"N{i}", rcpt="someone@example.com")
            wait_for(lambda i=i: f"id=N{i} " in out.getvalue(), what=f"event {i}")
    finally:
        done.set()
        t.join(5)
    assert (tmp_path / "delivery.log.1").exists()
