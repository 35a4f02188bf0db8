"""End to end: sendmail -> queue -> send -> remote -> an SMTP server on loopback.

Messages injected through ``sendmail`` with bare CR, bare LF and lines of dots arrive at the
next hop with CRLF line ends only, every leading dot doubled, and nothing ends DATA early.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import support
from tests.harness import running_appliance
from tests.mta.remote.helpers import SmtpTestServer, unstuff

SENDMAIL = Path(sys.executable).with_name("sendmail")


def test_sendmail_to_the_next_hop_keeps_the_message_whole(tmp_path: Path) -> None:
    with SmtpTestServer() as server, \
            running_appliance(tmp_path, smtp=False, submission=False, web=False) as app:
        (app.state.control / "smtproutes").write_text(f"far.test:127.0.0.1:{server.port}\n")
        message = (b"Subject: dots and strays\n\nfirst\n.\nMAIL FROM:<evil@x.test>\r\n"
                   b".\r\nbare\rcr\n..two\n.x\n")
        done = subprocess.run([str(SENDMAIL), "--state", str(app.state.root), "-i",
                               "-f", "me@postern.test", "you@far.test", "them@far.test"],
                              input=message, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        support.wait_for(lambda: server.transactions, timeout=30,
                         what="the message at the next hop")
    [tx] = server.transactions
    assert tx.rcpts == [b"you@far.test", b"them@far.test"]  # one transaction for both
    wire = tx.data
    assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b"")
    body = unstuff(wire).split(b"\r\n\r\n", 1)[1]
    assert body == (b"first\r\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nbare\r\ncr\r\n..two\r\n"
                    b".x\r\n")
    assert b"\r\n.\r\n" not in b"\r\n" + wire
