"""``postern queue`` against a real send (and queue/clean) on a tmp state dir."""

from __future__ import annotations

import json
import subprocess
import sys

from mta.common.paths import StateDir
from mta.queue.client import inject
from mta.send.status import StatusClient
from tests.mta.send.daemons import ROOT, running, setup_state
from tests.support import wait_for

MSG = b"Subject: q\r\n\r\nbody\r\n"


def postern(state: StateDir, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--state", str(state.root),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_queue_listing_summary_and_json(state: StateDir) -> None:
    setup_state(state)
    with running(state, "queue", "local", "clean", "send"):
        qid = inject(state.queue_socket, b"s@example.com", [b"far@remote.example"], MSG)
        client = StatusClient(state.status_socket)
        wait_for(lambda: client.request("list")["total"], what="queued")
        out = postern(state, "queue")
        assert out.returncode == 0, out.stderr
        assert qid in out.stdout and "<far@remote.example>" in out.stdout
        js = json.loads(postern(state, "queue", "--json").stdout)
        assert js["messages"][0]["id"] == qid
        summary = postern(state, "queue", "--summary")
        assert "messages in queue: 1" in summary.stdout and "remote.example" in summary.stdout
        detail = postern(state, "queue", "--id", qid)
        assert "subject: q" in detail.stdout
        bad = postern(state, "queue", "--id", "nonsense")
        assert bad.returncode == 1 and "not a queue id" in bad.stderr


def test_queue_without_send_is_a_temporary_error(state: StateDir) -> None:
    out = postern(state, "queue", "--summary")
    assert out.returncode == 75 and "cannot reach send" in out.stderr
