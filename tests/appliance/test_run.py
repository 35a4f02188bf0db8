"""``postern run`` end to end through tests/harness.py: the ready line, the listeners, a daemon
killed and restarted, SIGTERM stopping every process within 10 s, and bad command lines."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from appliance.commands import run as run_command
from appliance.supervisor import STOP_LIMIT, UnixProbe
from tests.harness import running_appliance
from tests.support import wait_for

POSTERN = [sys.executable, "-m", "appliance.cli"]
# Daemons still being written by other engineers are skipped by `postern run` with a logged
# line; these tests expect exactly the ones whose package has a __main__ today.
SMTPD_PRESENT = importlib.util.find_spec("mta.smtpd.__main__") is not None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_ready_line_restart_and_stop(tmp_path: Path) -> None:
    with running_appliance(tmp_path) as app:
        expected = {"web"} | ({"smtp", "submission"} if SMTPD_PRESENT else set())
        assert set(app.listeners) == expected
        assert app.ready_line.startswith("postern: ready ")
        # the web listener answers HTTP
        host, port = app.listeners["web"]
        response = urllib.request.urlopen(f"http://{host}:{port}/", timeout=30)
        assert response.status in (200, 302)

        # kill -9 the queue daemon: it is restarted and its socket answers again
        first = app.daemon_pid("queue")
        assert first is not None and alive(first)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (app.daemon_pid("queue") or first) != first, timeout=30,
                 what="queue restarted")
        wait_for(lambda: UnixProbe(app.state.queue_socket).check(), timeout=30,
                 what="queue.sock after the restart")
        assert "queue exited (killed by SIGKILL); restart 1 in 0.5s" in app.log()

        # a message through the restarted queue
        done = subprocess.run([*POSTERN, "--state", str(app.state.root), "sendmail",
                               "postmaster"], input=b"Subject: after restart\n\nhi\n",
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

        started = {name: app.daemon_pid(name) for name in
                   ("queue", "clean", "local", "remote", "send", "web", "worker", "beat")}
        pids = [pid for pid in started.values() if pid]
        assert all(alive(pid) for pid in pids)
        app.process.send_signal(signal.SIGTERM)
        app.process.wait(timeout=STOP_LIMIT)
        assert app.process.returncode == 0
        assert not any(alive(pid) for pid in pids)
        assert "postern: stopped (SIGTERM)" in app.log()


@pytest.mark.slow
def test_listeners_switched_off_are_not_named(tmp_path: Path) -> None:
    with running_appliance(tmp_path, smtp=False, submission=False, web=False) as app:
        assert app.listeners == {}
        assert app.ready_line == "postern: ready"
        assert app.daemon_pid("web") is None
        assert UnixProbe(app.state.queue_socket).check()


def test_run_refuses_an_uninitialised_state_dir(tmp_path: Path) -> None:
    done = subprocess.run([*POSTERN, "run", "--state", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 78
    assert "is not initialised" in done.stderr and "postern init" in done.stderr


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999",
                                   "example.com:25", "127.0.0.1:２５"])
def test_bad_listener_is_a_usage_error(tmp_path: Path, value: str) -> None:
    done = subprocess.run([*POSTERN, "run", "--state", str(tmp_path), "--smtp", value],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 64
    assert done.stderr.startswith("postern run: --smtp")


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:2525", ("127.0.0.1", 2525)),
    ("[::1]:587", ("::1", 587)),
    ("0.0.0.0:25", ("0.0.0.0", 25)),
    ("localhost:8000", ("127.0.0.1", 8000)),
])
def test_listener_parsing(value: str, expected: tuple[str, int]) -> None:
    listener = run_command.parse_listener("smtp", value)
    assert listener is not None and (listener.host, listener.port) == expected
    assert run_command.parse_listener("smtp", "off") is None


def test_default_listeners_for_an_ordinary_user_and_for_root() -> None:
    assert run_command.DEFAULTS_USER == {"smtp": "127.0.0.1:2525",
                                         "submission": "127.0.0.1:2587",
                                         "web": "127.0.0.1:8000",
                                         "imap": "127.0.0.1:2143", "pop3": "127.0.0.1:2110",
                                         "imaps": "off", "pop3s": "off"}
    assert (run_command.DEFAULTS_ROOT["imap"], run_command.DEFAULTS_ROOT["imaps"],
            run_command.DEFAULTS_ROOT["pop3"], run_command.DEFAULTS_ROOT["pop3s"]) \
        == ("0.0.0.0:143", "0.0.0.0:993", "0.0.0.0:110", "0.0.0.0:995")
    assert run_command.DEFAULTS_ROOT["smtp"] == "0.0.0.0:25"
    assert run_command.DEFAULTS_ROOT["submission"] == "0.0.0.0:587"
    assert run_command.DEFAULTS_ROOT["web"] == "127.0.0.1:8000"


@pytest.mark.slow
def test_the_delivery_log_follows_a_message_from_smtp_to_the_maildir(tmp_path: Path) -> None:
    import json
    import mailbox
    import smtplib

    with running_appliance(tmp_path, submission=False, web=False) as app:
        from mta.util.atomic import write_atomic
        control = app.state.control
        for name, text in (("locals", b"log.example\n"), ("rcpthosts", b"log.example\n"),
                           ("mailboxes", b"kim@log.example\n")):
            write_atomic(control / name, text)   # renamed into place: seen at once
        with smtplib.SMTP(*app.listeners["smtp"], timeout=30) as smtp:
            smtp.sendmail("sender@far.example", ["kim@log.example"],
                          b"Subject: traced\r\n\r\nhello\r\n")
        maildir = app.state.mail / "log.example" / "kim"
        wait_for(lambda: (maildir / "new").is_dir()
                 and len(mailbox.Maildir(maildir, create=False)) == 1, timeout=60,
                 what="the delivery")
        path = app.state.log / "delivery.log"

        def story() -> list[dict[str, object]]:
            return [json.loads(line) for line in path.read_text().splitlines()] \
                if path.exists() else []
        wait_for(lambda: any(e["event"] == "delivered" for e in story()), timeout=30,
                 what="the delivered event")
        events = story()
    [received] = [e for e in events if e["event"] == "received"]
    qid = received["id"]
    assert received["sender"] == "sender@far.example"
    assert received["client"] == "127.0.0.1" and received["origin"] == "network"
    assert isinstance(received["uid"], int) and received["rcpts"] == 1
    assert isinstance(received["size"], int) and received["size"] > len("Subject: traced")
    kinds = [e["event"] for e in events if e.get("id") == qid]
    assert kinds == ["received", "started", "delivered"]


def test_the_celery_worker_is_named_after_its_node(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes of one host name on one broker: each worker needs a node name of its own
    (tests/webui/test_worker.py shows the second of two alike dying at start)."""
    from mta.common.paths import StateDir

    state = StateDir.single(tmp_path / "var")
    names = []
    for node in ("east", None):
        if node is None:
            monkeypatch.delenv("POSTERN_NODE", raising=False)
        else:
            monkeypatch.setenv("POSTERN_NODE", node)
        specs = run_command.build_specs(state, str(state.root), {}, log=lambda *_: None)
        worker = next(s for s in specs if s.name == "worker")
        names.append(worker.argv[worker.argv.index("--hostname") + 1])
    assert names == [f"postern-east@{os.uname().nodename}",
                     f"postern-local@{os.uname().nodename}"]
