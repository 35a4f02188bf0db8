"""``postern check``: effective configuration, secrets never shown, every problem found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance import cli, install
from appliance.commands import check as check_command
from appliance.users import IdMap
from mta.common.paths import StateDir
from tests import support


def single_user_state(tmp_path: Path) -> StateDir:
    """A development state directory, as one ordinary user would have it."""
    state = StateDir.single(tmp_path / "var")
    for part in ("root", "control", "tls", "queue", "mail", "run", "log"):
        getattr(state, part).mkdir(parents=True, exist_ok=True)
        os.chmod(getattr(state, part), 0o700)
    for name, text in {"me": "mx.example.org\n", "rcpthosts": "example.org\nexample.net\n",
                       "passwd": "bob@example.org:{SHA512-CRYPT}$6$secrethash::::::\n"}.items():
        (state.control / name).write_text(text)
        os.chmod(state.control / name, 0o600)
    if os.geteuid() == 0:  # an ordinary user's tree: owned by someone other than root
        for dirpath, dirnames, filenames in os.walk(state.root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, 65534, 65534)
    return state


def test_prints_the_effective_configuration_but_no_secret(tmp_path: Path) -> None:
    state = single_user_state(tmp_path)
    lines, problems = check_command.check(state, ids=None)
    text = "\n".join(lines)
    assert "me: mx.example.org" in text
    assert "rcpthosts: example.org, example.net" in text
    assert "passwd: 1 entries (secret, not shown)" in text
    assert "secrethash" not in text
    assert "databytes: (default) 0 (no limit)" in text
    assert f"queue    {state.queue}" in text
    assert problems == []


def test_the_owner_decides_single_user_mode(tmp_path: Path) -> None:
    support.require_root("a tree owned by another user")
    state = single_user_state(tmp_path)
    lines, _problems = check_command.check(state)
    assert "users: every daemon runs as nobody" in "\n".join(lines)


def test_reports_a_broken_control_file_and_a_symlink(tmp_path: Path) -> None:
    state = single_user_state(tmp_path)
    (state.control / "locals").write_bytes(b"example.org\r\n")
    os.symlink("/etc/shadow", state.control / "badmailfrom")
    lines, problems = check_command.check(state, ids=None)
    text = "\n".join(str(p) for p in problems)
    assert "locals: locals line 1: control character" in text
    assert "badmailfrom: cannot open" in text
    assert "badmailfrom: a symlink or device: not allowed here" in text
    assert "root:x:0:0" not in "\n".join(lines)


def test_reports_modes_that_let_strangers_in(tmp_path: Path) -> None:
    state = single_user_state(tmp_path)
    os.chmod(state.control / "passwd", 0o644)
    os.chmod(state.mail, 0o755)
    _lines, problems = check_command.check(state, ids=None)
    assert sorted(p.path.name for p in problems) == ["mail", "passwd"]


def test_exit_status_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = single_user_state(tmp_path)
    if os.geteuid() != 0:
        assert cli.main(["check", "--state", str(state.root)]) == 0
        assert "permission problems: none" in capsys.readouterr().out
    os.chmod(state.mail, 0o777)
    assert cli.main(["check", "--state", str(state.root)]) == 1
    out = capsys.readouterr().out
    assert "permission problems (1):" in out and f"{state.mail}: mode 0777" in out
    assert cli.main(["check", "--state", str(tmp_path / "nowhere")]) == 1
    assert "does not exist (run `postern init`)" in capsys.readouterr().out


def test_an_installed_tree_checks_clean_against_its_own_users(tmp_path: Path) -> None:
    support.require_root("install chowns")
    support.require("systemd-sysusers")
    install.install(tmp_path, python="/usr/bin/python3", sendmail="/opt/postern/bin/sendmail")
    state = StateDir.fhs(tmp_path)
    ids = IdMap.tree(tmp_path)
    lines, problems = check_command.check(state, ids=ids)
    assert problems == []
    assert any("postern-vmail" in line and "uid" in line for line in lines)
    assert cli.main(["check", "--root", str(tmp_path)]) == 0
    os.chown(state.mail, ids.uid("postern-web"), ids.gid("postern-web"))
    _lines, problems = check_command.check(state, ids=ids)
    assert [str(p) for p in problems] == [
        f"{state.mail}: owner postern-web:postern-web, want postern-vmail:postern-vmail "
        "(Maildirs: local writes, nobody else reads)"]


def test_stale_or_missing_units_are_reported(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in install.unit_names():
        (unit_dir / name).write_text(install.render_unit(name, python="/opt/p/bin/python3"))
    assert check_command.stale_units(unit_dir) == []
    queue = unit_dir / "postern-queue.service"
    queue.write_text(queue.read_text().replace("NoNewPrivileges=yes\n", ""))
    (unit_dir / "postern-web.service").unlink()
    assert check_command.stale_units(unit_dir) == [
        ("postern-queue.service", "differs from this version's unit (run `postern install`)"),
        ("postern-web.service", "missing (run `postern install`)")]
