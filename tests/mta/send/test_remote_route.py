"""send hands remote recipients to the real remote daemon; Postfix's smtp-sink is the world.

One job per message and domain goes over remote.sock; remote's answers come back per
recipient: accepted (delivered), 4xx (deferred, on qmail's remote schedule), 5xx (bounced at
once with the remote's text in the DSN).
"""

from __future__ import annotations

import mailbox
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta.common.paths import StateDir
from mta.queue.client import inject
from mta.send.status import StatusClient
from tests.mta.send.daemons import running, setup_state
from tests.support import free_port, require, wait_for

MSG = b"Subject: out\r\nFrom: joe@example.com\r\n\r\nto the world\r\n"


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    binary = require("smtp-sink", path="/usr/sbin/smtp-sink")
    port = free_port()
    # smtp-sink drops to nobody when run as root: pytest's 0700 tmp dirs are closed to it
    dump = Path(tempfile.mkdtemp(prefix="postern-sink-", dir="/tmp"))
    dump.chmod(0o777)
    extra: list[str] = getattr(request, "param", [])
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([binary, *user, *extra, "-d", f"{dump}/%M.", f"127.0.0.1:{port}",
                             "16"])
    try:
        yield port, dump
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(dump, ignore_errors=True)


def joe_box(state: StateDir) -> list[mailbox.MaildirMessage]:
    path = state.mail / "example.com" / "joe"
    if not (path / "cur").is_dir():
        return []
    return list(mailbox.Maildir(path, create=False))


def prepare(state: StateDir, port: int) -> None:
    setup_state(state, extra={"smtproutes": f"sink.test:127.0.0.1:{port}\n",
                              "tlspolicy": "sink.test:none\n"})


def test_remote_delivery_reaches_the_sink(state: StateDir, sink: tuple[int, Path]) -> None:
    port, dump = sink
    prepare(state, port)
    with running(state, "queue", "local", "clean", "remote", "send"):
        inject(state.queue_socket, b"joe@example.com", [b"a@sink.test", b"b@sink.test"], MSG)
        wait_for(lambda: any(b"to the world" in p.read_bytes() for p in dump.iterdir()
                             if p.is_file()), what="the sink to get the message")
        client = StatusClient(state.status_socket)
        wait_for(lambda: client.request("summary")["summary"]["messages"] == 0, what="clean")


@pytest.mark.parametrize("sink", [["-f", "RCPT"]], indirect=True)
def test_remote_5xx_is_bounced_with_the_remote_text(state: StateDir,
                                                    sink: tuple[int, Path]) -> None:
    port, _ = sink
    prepare(state, port)
    with running(state, "queue", "local", "clean", "remote", "send"):
        inject(state.queue_socket, b"joe@example.com", [b"a@sink.test"], MSG)
        wait_for(lambda: joe_box(state), what="the bounce")
    [dsn] = joe_box(state)
    raw = dsn.as_bytes()
    assert b"Final-Recipient: rfc822; a@sink.test" in raw
    assert b"Status: 5." in raw and b"Error: command failed" in raw


@pytest.mark.parametrize("sink", [["-r", "RCPT"]], indirect=True)
def test_remote_4xx_is_deferred_on_the_remote_schedule(state: StateDir,
                                                       sink: tuple[int, Path]) -> None:
    port, _ = sink
    prepare(state, port)
    with running(state, "queue", "local", "clean", "remote", "send"):
        qid = inject(state.queue_socket, b"joe@example.com", [b"a@sink.test"], MSG)
        client = StatusClient(state.status_socket)
        wait_for(lambda: client.request("list", state="deferred")["total"], what="deferral")
        m = client.request("message", id=qid)["message"]
        [r] = m["recipients"]
        assert r["attempts"] == 1 and r["last_error"].startswith("4")
        assert r["next_attempt"] == m["birth"] + 400  # (isqrt(0) + 20)^2
    assert joe_box(state) == []
