"""Postern's remote daemon delivering to a real Postfix (Debian's) on loopback.

Postfix receives over SMTP (with STARTTLS) and its ``virtual`` agent writes Maildirs, which
we read with Python's ``mailbox``. Routing is by smtproutes to Postfix's port.
"""

from __future__ import annotations

import mailbox
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta.common import ipc
from mta.common.frames import recv_frame
from mta.common.paths import StateDir
from mta.common.results import Result
from mta.local.protocol import decode_result, encode_job
from tests import support
from tests.interop.postfix_instance import POSTFIX, PostfixInstance
from tests.mta.queue.conftest import accepts
from tests.mta.remote.helpers import self_signed, store_message

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixInstance]:
    support.require("postfix", path=POSTFIX)
    support.require_root("Postfix's master starts as root")
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), names=("postfix.test",))
    tls = (f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
           "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\n"
           "message_size_limit = 200000\n")
    with PostfixInstance(support.free_port(), mailboxes=["user@dest.test", "other@dest.test",
                                                         "jörg@dest.test"],
                         extra=tls) as pf:
        yield pf


@pytest.fixture
def remote(state: StateDir, postfix: PostfixInstance) -> Iterator[StateDir]:
    state.control.mkdir(parents=True, exist_ok=True)
    state.queue.mkdir(parents=True, exist_ok=True)
    (state.control / "helohost").write_text("client.postern.test\n")
    (state.control / "smtproutes").write_text(f"dest.test:127.0.0.1:{postfix.port}\n")
    store_message(state.queue, b"x")
    log = open(state.root / "remote.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mta.remote", "--state", str(state.root)],
                            cwd=ROOT, stderr=log)
    support.wait_for(lambda: accepts(state.remote_socket), what="remote.sock to accept")
    try:
        yield state
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def job(state: StateDir, qid: str, rcpts: list[bytes], params: list[bytes] | None = None,
        sender: bytes = b"sender@postern.test") -> list[Result]:
    with socket.socket(socket.AF_UNIX) as s:
        support.wait_for(lambda: _connect(s, state), what="remote.sock to accept")
        s.sendall(encode_job(qid, sender, rcpts, params or []))
        out = []
        for _ in rcpts:
            frame = recv_frame(s, ipc.DELIVERY_SERVER_FRAMES)
            assert frame is not None
            out.append(decode_result(frame))
        return out


def _connect(s: socket.socket, state: StateDir) -> bool:
    try:
        s.connect(str(state.remote_socket))
        return True
    except OSError:
        return False


def messages(pf: PostfixInstance, address: str, count: int) -> list[mailbox.MaildirMessage]:
    def ready() -> list[mailbox.MaildirMessage] | None:
        path = pf.maildir(address)
        try:
            found = list(mailbox.Maildir(path, create=False))
        except (FileNotFoundError, mailbox.NoSuchMailboxError):  # not created yet
            return None
        return found if len(found) >= count else None
    return support.wait_for(ready, timeout=20, what=f"{count} messages for {address}")  # type: ignore[return-value]


def test_postfix_receives_intact_messages_over_tls(remote: StateDir,
                                                   postfix: PostfixInstance) -> None:
    stored = (b"Subject: through postfix\r\nX-Test: 1\r\n\r\nfirst\r\n.\r\n"
              b"..two dots\r\nbare\nlf and bare\rcr\r\n.\n")
    qid = store_message(remote.queue, stored)
    got = job(remote, qid, [b"user@dest.test", b"nobody@dest.test", b"other@dest.test"])
    assert [r.outcome.value for r in got] == ["delivered", "permanent", "delivered"]
    assert got[1].enhanced == "5.1.1" and "550" in got[1].text
    assert "User unknown" in got[1].text  # Postfix's own text reaches the bounce
    [msg] = messages(postfix, "user@dest.test", 1)
    [other] = messages(postfix, "other@dest.test", 1)
    assert msg["Subject"] == "through postfix"
    assert "with ESMTPS" in msg["Received"]  # STARTTLS was used (opportunistic)
    body = msg.get_payload(decode=False)
    assert body.replace("\r\n", "\n") == "first\n.\n..two dots\nbare\nlf and bare\ncr\n.\n"
    log = postfix.read_log()
    assert "nrcpt=2" in log  # both accepted recipients in one transaction


def test_postfix_size_limit_and_smtputf8(remote: StateDir, postfix: PostfixInstance) -> None:
    big = store_message(remote.queue, b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 300)
    got = job(remote, big, [b"user@dest.test"])
    assert got[0].outcome.value == "permanent" and got[0].enhanced == "5.3.4"
    utf8 = store_message(remote.queue, "Subject: grüße\r\n\r\nhallo\r\n".encode())
    got = job(remote, utf8, ["jörg@dest.test".encode()], [b"SMTPUTF8", b"BODY=8BITMIME"])
    assert got[0].outcome.value == "delivered", got[0].text
    [msg] = messages(postfix, "jörg@dest.test", 1)
    assert "hallo" in msg.get_payload()
    assert "with UTF8SMTPS" in str(msg["Received"])  # SMTPUTF8 and STARTTLS were used
