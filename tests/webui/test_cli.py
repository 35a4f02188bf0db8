"""The ``postern`` subcommands that administer through the database: each writes the
database and publishes before returning; exit 0, or one line and non-zero. Run as real
subprocesses against a tmp_path state directory (embedded settings, SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mta.common import addressbook, passwd, tcprules

POSTERN = [sys.executable, "-m", "appliance.cli"]


def run(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "POSTERN_STATE")}
    return subprocess.run([*POSTERN, "--state", str(state), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli") / "var"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("postern: ") and text in lines[0], lines


def test_the_whole_set(state: Path) -> None:
    control = state / "control"
    ok(run(state, "domain", "add", "Bücher.Example"))
    assert (control / "rcpthosts").read_text() == "xn--bcher-kva.example\n"
    ok(run(state, "mailbox", "add", "alice@bücher.example", "--quota", "1G",
           "--password-stdin", stdin="long enough\n"))
    boxes = addressbook.parse_mailboxes((control / "mailboxes").read_bytes())
    assert [(m.address, m.quota) for m in boxes] == [("alice@xn--bcher-kva.example", 2**30)]
    stored = (control / "passwd").read_text().split(":")[1]
    assert passwd.verify(stored, "long enough")
    ok(run(state, "alias", "add", "team@xn--bcher-kva.example", "alice@xn--bcher-kva.example",
           "boss@elsewhere.example"))
    assert "team@xn--bcher-kva.example: alice@xn--bcher-kva.example, boss@elsewhere.example" \
        in (control / "aliases").read_text()
    ok(run(state, "relay", "allow", "10.0.0.0/8"))
    ok(run(state, "access", "add", "192.0.2.:deny"))
    rules = tcprules.parse((control / "tcp.smtp").read_bytes())
    assert rules.lookup("10.1.1.1").env == {"RELAYCLIENT": ""}
    assert rules.lookup("192.0.2.1").allow is False
    assert ok(run(state, "access", "test", "192.0.2.1")).strip() == "192.0.2.:deny"
    ok(run(state, "admin", "add", "tenant", "--domain", "bücher.example", "--password-stdin",
           stdin="a good password\n"))
    token = ok(run(state, "token", "create", "tenant", "--read-only")).strip()
    assert token.startswith("pst_") and len(token) > 30
    assert "read-only" in ok(run(state, "token", "list"))
    assert "tenant\tdomains: xn--bcher-kva.example" in ok(run(state, "admin", "list"))
    secret, uri = ok(run(state, "admin", "totp", "tenant")).split()
    assert uri.startswith("otpauth://totp/Postern:tenant?secret=" + secret)
    assert "alice@xn--bcher-kva.example\t1G\tenabled" in ok(run(state, "mailbox", "list"))
    generation = int((control / "generation").read_text().split()[0])
    assert ok(run(state, "publish")).strip() == f"generation {generation}"  # nothing changed
    ok(run(state, "domain", "alias", "books.example", "bücher.example"))
    assert "@books.example: @xn--bcher-kva.example" in (control / "aliases").read_text()
    ok(run(state, "mailbox", "passwd", "alice@xn--bcher-kva.example", "--password-stdin",
           stdin="a new password\n"))
    assert passwd.verify((control / "passwd").read_text().split(":")[1], "a new password")
    ok(run(state, "relay", "domain", "add", "backup.example", "--route", "mx.backup.example:2525"))
    ok(run(state, "relay", "smarthost", "smart.example:587", "--user", "me",
           "--password-stdin", stdin="smart pass\n"))
    assert (control / "smtproutes").read_text() == \
        "backup.example:mx.backup.example:2525\n:smart.example:587\n"
    assert (control / "relayauth").read_text() == "smart.example:587 me smart pass\n"
    ok(run(state, "alias", "remove", "team@xn--bcher-kva.example"))
    assert "team@" not in (control / "aliases").read_text()
    ok(run(state, "relay", "deny", "10.0.0.0/8"))
    assert "10.0.0.0/8" not in (control / "tcp.smtp").read_text()


def test_refusals_are_one_line_and_change_nothing(state: Path) -> None:
    ok(run(state, "domain", "add", "refuse.example"))
    control = state / "control"
    before = {p.name: p.read_bytes() for p in control.iterdir()}
    fails(run(state, "domain", "add", "x.example\ny.example"), "control character")
    fails(run(state, "domain", "add", "refuse.example"), "already a hosted domain")
    fails(run(state, "mailbox", "add", "a@refuse.example", "--password-stdin"), "no password")
    fails(run(state, "mailbox", "add", "a@refuse.example"), "--password-stdin")
    fails(run(state, "mailbox", "add", "a@nowhere.example", "--password-stdin",
              stdin="long enough\n"), "not a hosted domain")
    fails(run(state, "mailbox", "add", "a@refuse.example", "--quota", "lots",
              "--password-stdin", stdin="long enough\n"), "not a size")
    ok(run(state, "alias", "add", "a@refuse.example", "b@refuse.example"))
    before = {p.name: p.read_bytes() for p in control.iterdir()}
    fails(run(state, "alias", "add", "b@refuse.example", "a@refuse.example"), "loop")
    fails(run(state, "relay", "allow", "10.0.0.1/8"), "host bits")
    fails(run(state, "access", "add", "10.0.0.0/8:maybe"), "")
    fails(run(state, "admin", "add", "x", "--domain", "nowhere.example", "--password-stdin",
              stdin="a good password\n"), "no domain")
    fails(run(state, "token", "create", "nobody"), "no admin")
    assert {p.name: p.read_bytes() for p in control.iterdir()} == before
