"""Dovecot reads what ``local`` writes: Debian's imap binary, pre-authenticated, on our Maildir.

The message goes through the real ``local`` daemon (local.sock job), then Dovecot's ``imap``
runs in PREAUTH mode on that Maildir (as ``nobody`` when we are root, since Dovecot refuses
uid 0) and must see the message, its header and its body, with CRLF line ends restored.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from mta.common import ipc, queuedirs
from mta.common.frames import recv_frame
from mta.common.paths import StateDir
from mta.common.results import Outcome
from mta.local.protocol import decode_result, encode_job
from tests.mta.send.daemons import running, setup_state
from tests.support import require

IMAP = "/usr/lib/dovecot/imap"
MESSAGE = (b"Subject: read by dovecot\r\nFrom: a@remote.example\r\nMessage-ID: <d1@r>\r\n\r\n"
           b"first line\r\nsecond line\r\n")


def imap_session(maildir: Path, home: Path, commands: bytes) -> str:
    conf = home / "dovecot.conf"
    conf.write_text(f"base_dir = {home}/run\nstate_dir = {home}/state\nssl = no\n"
                    f"log_path = {home}/log\nmail_location = maildir:{maildir}\n")
    for d in ("run", "state"):
        (home / d).mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "nobody"}
    argv = [IMAP, "-c", str(conf)]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for root, dirs, files in os.walk(home):
            for name in [root, *(os.path.join(root, x) for x in dirs + files)]:
                os.chown(name, nobody.pw_uid, nobody.pw_gid)
        argv = [shutil.which("setpriv") or "setpriv", f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}", "--clear-groups", *argv]
    done = subprocess.run(argv, input=commands, capture_output=True, env=env, timeout=60)
    return done.stdout.decode("utf-8", "replace")


@pytest.mark.interop
def test_dovecot_reads_a_local_delivery(state: StateDir, tmp_path: Path) -> None:
    require("dovecot imap", path=IMAP)
    setup_state(state, mailboxes="reader@example.com\n")
    queuedirs.create(state.queue)
    qid = queuedirs.make_id(1_700_000_000, 7, 0x33)
    queuedirs.QueueDirs.open(state.queue).mess(qid).write_bytes(MESSAGE)
    with running(state, "local"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(state.local_socket))
            s.sendall(encode_job(qid, b"a@remote.example", [b"reader@example.com"]))
            frame = recv_frame(s, ipc.DELIVERY_SERVER_FRAMES)
            assert frame is not None and decode_result(frame).outcome is Outcome.DELIVERED
    # pytest's tmp dirs are 0700; nobody needs a path it can traverse
    home = Path(tempfile.mkdtemp(prefix="postern-dovecot-", dir="/tmp"))
    try:
        os.chmod(home, 0o755)
        maildir = home / "Maildir"
        shutil.copytree(state.mail / "example.com" / "reader", maildir)
        out = imap_session(maildir, home, b"a SELECT INBOX\r\n"
                           b"b FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT RETURN-PATH)])\r\n"
                           b"c FETCH 1 (BODY.PEEK[TEXT])\r\nd LOGOUT\r\n")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert "* 1 EXISTS" in out, out
    assert "Subject: read by dovecot\r\n" in out and "Return-Path: <a@remote.example>" in out
    assert "first line\r\nsecond line\r\n" in out
    assert "c OK" in out
