"""``postern init``: the state directory, default control files, queue, TLS and admin account;
idempotent and never overwriting an admin's files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.commands import init as init_command
from mta.common import queuedirs, rcpthosts, tcprules
from mta.common.addressbook import parse_locals
from mta.common.paths import StateDir

POSTERN = [sys.executable, "-m", "appliance.cli"]


def run_init(state: Path, *args: str, password: str | None = "pw-for-tests"
             ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("POSTERN_ADMIN_PASSWORD", None)
    if password is not None:
        env["POSTERN_ADMIN_PASSWORD"] = password
    done = subprocess.run([*POSTERN, "init", "--state", str(state), *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and path.name != "db.sqlite3" else None
        mtime = 0 if path.is_dir() else st.st_mtime_ns  # a re-created file touches its dir
        out[str(path.relative_to(root))] = (st.st_mode, mtime, data)
    return out


def test_init_creates_every_part_with_its_mode(tmp_path: Path) -> None:
    state = StateDir.single(tmp_path / "var")
    run_init(state.root, "--me", "mail.example.org", "--no-web")
    for part, mode in init_command.DIR_MODES.items():
        path: Path = getattr(state, part)
        assert path.is_dir(), part
        assert stat.S_IMODE(path.stat().st_mode) == mode, part
    assert queuedirs.read_split(state.queue) == 23
    assert (state.queue / "todo" / "22").is_dir()


def test_default_control_files_fail_closed_and_parse(tmp_path: Path) -> None:
    state = StateDir.single(tmp_path / "var")
    run_init(state.root, "--me", "mail.example.org", "--no-web")
    read = lambda name: state.control_file(name).read_bytes()  # noqa: E731
    assert read("me") == b"mail.example.org\n"
    assert read("defaultdomain") == b"example.org\n"
    assert parse_locals(read("locals")) == {"mail.example.org"}
    hosts = rcpthosts.parse(read("rcpthosts"))
    assert hosts.allows("mail.example.org")
    assert not hosts.allows("example.com")  # relays for nobody else
    rules = tcprules.parse(read("tcp.smtp"))
    assert rules.lookup("127.0.0.1").env == {"RELAYCLIENT": ""}
    assert rules.lookup("::1").env == {"RELAYCLIENT": ""}
    outside = rules.lookup("192.0.2.7")
    assert outside.allow and "RELAYCLIENT" not in outside.env


def test_init_twice_changes_nothing_and_keeps_admin_edits(tmp_path: Path) -> None:
    state = StateDir.single(tmp_path / "var")
    run_init(state.root, "--no-web")
    state.control_file("rcpthosts").write_text("example.net\n")  # the admin's edit
    state.control_file("locals").unlink()                         # and a file removed
    (state.tls / "cert.pem").write_text("the admin's own certificate\n")
    before = snapshot(state.root)
    run_init(state.root, "--no-web", "--me", "other.example")
    after = snapshot(state.root)
    restored = after.pop("control/locals")
    assert restored[2] == before["control/me"][2]  # a missing default comes back, for `me`
    assert after == before
    assert state.control_file("rcpthosts").read_text() == "example.net\n"


def test_tls_key_is_private_and_matches_a_certificate_for_me(tmp_path: Path) -> None:
    state = StateDir.single(tmp_path / "var")
    run_init(state.root, "--me", "mx.example.org", "--no-web")
    key_path, cert_path = state.tls / "key.pem", state.tls / "cert.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mx.example.org" in names.get_values_for_type(x509.DNSName)


def test_bad_host_name_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    env = dict(os.environ)
    done = subprocess.run([*POSTERN, "init", "--state", str(tmp_path / "var"), "--no-web",
                           "--me", "bad name\nx"], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "is not a host name" in done.stderr
    assert not (tmp_path / "var" / "control" / "me").exists()


def test_generated_admin_password_is_printed_once(tmp_path: Path) -> None:
    state = tmp_path / "var"
    first = run_init(state, password=None)
    lines = [line for line in first.stdout.splitlines() if "password:" in line]
    assert len(lines) == 1 and lines[0].startswith("postern: web admin account: admin")
    password = lines[0].rsplit(" ", 1)[1]
    assert len(password) >= 16
    second = run_init(state, password=None)
    assert "password" not in second.stdout
    assert password not in (state / "db.sqlite3").read_bytes().decode("latin-1")


def test_admin_password_from_the_environment_is_not_printed(tmp_path: Path) -> None:
    done = run_init(tmp_path / "var", password="s3cret-from-env")
    assert "s3cret-from-env" not in done.stdout + done.stderr
    assert (tmp_path / "var" / "db.sqlite3").is_file()
