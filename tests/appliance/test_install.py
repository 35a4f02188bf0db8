"""``postern install``/``uninstall`` into a tree: every owner and mode, idempotence,
sendmail never silently replaced, uninstall keeps mail and queue."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from appliance import cli, install, permissions, rootstate, users
from appliance.install import InstallError
from appliance.users import IdMap
from mta.common.paths import StateDir
from tests import support

PYTHON = "/opt/postern/bin/python3"
OURS = "/opt/postern/bin/sendmail"


@pytest.fixture(autouse=True)
def _root_and_sysusers(tmp_path: Path) -> None:
    support.require_root("install chowns to the table's users")
    support.require("systemd-sysusers")
    # The image's Postern: our sendmail is the one with a `postern` script beside it.
    bin_dir = tmp_path / OURS.lstrip("/")
    bin_dir.parent.mkdir(parents=True)
    for name in ("sendmail", "postern"):
        (bin_dir.parent / name).write_text("#!/bin/sh\n")


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            link = os.readlink(path) if path.is_symlink() else ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid,
                                                int(st.st_mtime_ns), link)
    return out


def test_install_into_a_tree_gives_every_path_its_table_row(tmp_path: Path) -> None:
    host_accounts = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
    report = install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert report.changed
    ids = IdMap.tree(tmp_path)
    assert ids.missing() == []
    state = StateDir.fhs(tmp_path)
    for part, path in permissions.part_paths(state).items():
        rule = permissions.directory_rule(part)
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == rule.mode, (path, oct(st.st_mode))
        assert st.st_uid == ids.uid(rule.owner), path
        assert st.st_gid == ids.gid(rule.group), path
    assert permissions.audit(state, ids) == []
    # the host's account database is untouched: the users live in the tree only
    assert (Path("/etc/passwd").read_text(), Path("/etc/group").read_text()) == host_accounts


def test_install_writes_users_tmpfiles_units_and_sendmail(tmp_path: Path) -> None:
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    sysusers = (tmp_path / install.SYSUSERS_FILE).read_text()
    assert sysusers == users.render_sysusers()
    for a in users.ACCOUNTS:
        assert f"u {a.name} -" in sysusers
    tmpfiles = (tmp_path / install.TMPFILES_FILE).read_text()
    assert "d /run/postern 3771 root postern -" in tmpfiles
    unit_dir = tmp_path / install.UNIT_DIR
    for name in install.unit_names():
        text = (unit_dir / name).read_text()
        assert re.search(r"@[A-Z]+@", text) is None, name
    assert f"ExecStart={PYTHON} -m mta.queue --state fhs" in (
        unit_dir / "postern-queue.service").read_text()
    assert os.readlink(unit_dir / "multi-user.target.wants/postern.target") == "../postern.target"
    for link in install.SENDMAIL_LINKS:
        assert os.readlink(tmp_path / link) == OURS


def test_install_is_idempotent(tmp_path: Path) -> None:
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    before = snapshot(tmp_path)
    again = install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert again.changed == []
    assert snapshot(tmp_path) == before


def test_install_repairs_what_was_changed_since(tmp_path: Path) -> None:
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    state = StateDir.fhs(tmp_path)
    os.chmod(state.mail, 0o755)
    os.chown(state.queue, 0, 0)
    report = install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert len(report.changed) == 2
    assert permissions.audit(state, IdMap.tree(tmp_path)) == []


def test_another_mta_s_sendmail_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    sbin = tmp_path / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "sendmail").write_bytes(b"\x7fELF postfix's sendmail")
    before = snapshot(tmp_path)
    with pytest.raises(InstallError, match=r"usr/sbin/sendmail is a program.*--force"):
        install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert snapshot(tmp_path) == before


def test_a_foreign_symlink_is_named_in_the_refusal(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/exim4").write_text("exim")
    os.symlink("exim4", tmp_path / "usr/sbin/sendmail")
    with pytest.raises(InstallError, match="a symlink to exim4"):
        install.install(tmp_path, python=PYTHON, sendmail=OURS)


def test_force_keeps_the_old_sendmail_and_uninstall_puts_it_back(tmp_path: Path) -> None:
    sbin = tmp_path / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "sendmail").write_bytes(b"other MTA")
    report = install.install(tmp_path, python=PYTHON, sendmail=OURS, force=True)
    assert any("postern-saved" in line for line in report.changed)
    assert os.readlink(sbin / "sendmail") == OURS
    assert (sbin / "sendmail.postern-saved").read_bytes() == b"other MTA"
    install.uninstall(tmp_path)
    assert not (sbin / "sendmail").is_symlink()
    assert (sbin / "sendmail").read_bytes() == b"other MTA"


def test_a_dangling_link_is_no_mta_and_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    os.symlink("/usr/lib/gone/sendmail", tmp_path / "usr/sbin/sendmail")
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert os.readlink(tmp_path / "usr/sbin/sendmail") == OURS


def test_uninstall_keeps_mail_queue_and_control_unless_purge(tmp_path: Path) -> None:
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    state = StateDir.fhs(tmp_path)
    (state.mail / "kept").mkdir()
    (state.queue / "split").write_text("23\n")
    (state.control / "me").write_text("mx.example\n")
    report = install.uninstall(tmp_path)
    assert any("kept" in note for note in report.notes)
    assert (state.mail / "kept").is_dir() and (state.queue / "split").exists()
    assert (state.control / "me").exists()
    assert not (tmp_path / install.UNIT_DIR / "postern.target").exists()
    assert not os.path.lexists(tmp_path / "usr/sbin/sendmail")
    assert not state.run.exists()
    # installing again brings everything back around the kept data
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    assert (state.mail / "kept").is_dir()
    install.uninstall(tmp_path, purge=True)
    assert not state.mail.exists() and not state.queue.exists() and not state.control.exists()
    assert not (tmp_path / install.SYSUSERS_FILE).exists()


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["install", "--root", str(tmp_path), "--python", PYTHON]) == 0
    assert "created users" in capsys.readouterr().out
    assert cli.main(["install", "--root", str(tmp_path), "--python", PYTHON]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert cli.main(["uninstall", "--root", str(tmp_path)]) == 0
    assert "removed" in capsys.readouterr().out
    (tmp_path / "usr/sbin/sendmail").write_text("other")
    assert cli.main(["install", "--root", str(tmp_path), "--python", PYTHON]) == 1
    assert "refusing to replace it" in capsys.readouterr().err


# --- upgrade: queued mail survives, admin's control files stay ------------------------------

def test_upgrade_keeps_admin_edits_and_delivers_what_was_queued(tmp_path: Path) -> None:
    """Queue mail with only the queue daemon up, "upgrade" (``postern init`` again, as every
    upgrade does after installing the new code, then the root-run state is secured again),
    start everything: every queued message is delivered, the admin's edits are still there."""
    import mailbox
    import shutil
    import subprocess
    import sys

    from mta.queue.client import inject
    from tests.harness import init, running_appliance
    from tests.mta.queue.conftest import accepts

    me, address = "mx.upgrade.example", "carol@mx.upgrade.example"
    base = support.droppable_base("postern-upgrade-")
    state = StateDir.single(base / "var")
    try:
        init(state.root, "--no-web", "--me", me)
        (state.control / "mailboxes").write_text(f"{address}\n")
        (state.control / "databytes").write_text("1000000\n")          # the admin's edits
        (state.control / "tcp.smtp").write_text("127.:allow\n:deny\n")
        rootstate.secure(state)
        edited = {n: (state.control / n).read_bytes() for n in ("databytes", "tcp.smtp")}

        queue = subprocess.Popen([sys.executable, "-m", "mta.queue", "--state", str(state.root),
                                  "--user", users.QUEUE], stderr=subprocess.PIPE)
        try:
            # accepting, not merely there: bind() makes the file a moment before listen()
            support.wait_for(lambda: accepts(state.queue_socket), timeout=30,
                             what="queue.sock to accept")
            markers = [f"queued-before-upgrade-{i}".encode() for i in range(5)]
            for marker in markers:
                inject(state.queue_socket, b"", [address.encode()],
                       b"Subject: upgrade\r\n\r\n" + marker + b"\r\n")
        finally:
            queue.terminate()
            queue.wait(timeout=30)
        assert not any((state.mail / me).glob("*/new/*"))            # nothing delivered yet

        init(state.root, "--no-web", "--me", me)                      # the upgrade
        rootstate.secure(state)
        assert {n: (state.control / n).read_bytes() for n in edited} == edited

        with running_appliance(base, web=False, submission=False):
            def delivered() -> list[bytes]:
                try:   # the Maildir appears with the first delivery, maybe not yet
                    box = mailbox.Maildir(state.mail / me / "carol", factory=None,
                                          create=False)
                    bodies = [m.as_bytes() for m in box]
                except (FileNotFoundError, mailbox.NoSuchMailboxError):
                    return []
                return bodies if len(bodies) >= len(markers) else []
            bodies = support.wait_for(delivered, timeout=60, what="the queued messages")
        assert isinstance(bodies, list)
        for marker in markers:
            assert sum(marker in body for body in bodies) == 1, marker
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_on_this_machine_postfix_s_sendmail_is_named_and_kept() -> None:
    """The real thing: CI installs Debian's postfix, whose /usr/sbin/sendmail is a program.
    ``postern install`` on / refuses before changing anything, naming the package."""
    support.require("postfix", path="/usr/sbin/postfix")
    sendmail = Path("/usr/sbin/sendmail")
    if sendmail.is_symlink() or not sendmail.is_file():
        pytest.skip("/usr/sbin/sendmail is not postfix's program on this machine")
    before = sendmail.read_bytes()
    unit = Path("/") / install.UNIT_DIR / install.TARGET
    existed = unit.exists()
    with pytest.raises(InstallError, match="/usr/sbin/sendmail is a program from the Debian "
                                           "package postfix"):
        install.install()
    assert sendmail.read_bytes() == before and not sendmail.is_symlink()
    assert unit.exists() == existed


def test_tmpfiles_recreates_run_and_the_trigger_at_boot(tmp_path: Path) -> None:
    """/run is a tmpfs: at every boot systemd-tmpfiles must bring back run/ and its FIFO with
    the table's owners (the image's own users) and modes."""
    tool = support.require("systemd-tmpfiles")
    install.install(tmp_path, python=PYTHON, sendmail=OURS)
    state = StateDir.fhs(tmp_path)
    shutil.rmtree(state.run)
    done = subprocess.run([tool, f"--root={tmp_path}", "--create",
                           str(tmp_path / install.TMPFILES_FILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(state.trigger).st_mode)
    assert permissions.audit(state, IdMap.tree(tmp_path)) == []
