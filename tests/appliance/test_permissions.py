"""The permission table: its rows, its matcher, audit() and apply(), and the docs copy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance import install, permissions, rootstate, users
from appliance.permissions import Kind, rule_for
from appliance.users import IdMap
from mta.common import ipc
from mta.common.paths import StateDir
from tests import support

ROOT = Path(__file__).resolve().parents[2]


def test_every_part_has_a_directory_row() -> None:
    for part in permissions.PARTS:
        assert permissions.directory_rule(part).kind is Kind.DIR


def test_every_socket_is_in_the_table_and_owned_by_its_server() -> None:
    for sock, (server, _clients) in ipc.PEERS.items():
        rule = rule_for("run", (sock,), Kind.SOCKET)
        assert rule is not None, sock
        assert rule.owner == ipc.DAEMON_USERS[server]
    queue_sock = rule_for("run", (ipc.QUEUE_SOCKET,), Kind.SOCKET)
    assert queue_sock is not None and queue_sock.mode == 0o666
    assert rule_for("run", ("evil.sock",), Kind.SOCKET) is None


def test_table_names_only_known_users_and_groups() -> None:
    known_users = {a.name for a in users.ACCOUNTS} | {"root"}
    known_groups = set(users.all_groups()) | {"root"}
    for rule in permissions.TABLE:
        assert set(rule.owners) <= known_users, rule
        assert set(rule.groups) <= known_groups, rule


@pytest.mark.parametrize(("part", "rel", "kind", "owner", "mode"), [
    ("queue", ("mess", "7", "ABC"), Kind.FILE, users.QUEUE, 0o640),
    ("queue", ("info", "7", "ABC"), Kind.FILE, users.SEND, 0o640),
    ("queue", ("bounce",), Kind.DIR, users.SEND, 0o750),       # a kind SEND may add
    ("queue", ("bounce", "3", "X"), Kind.FILE, users.SEND, 0o640),
    ("mail", ("example.org", "bob", "new", "1.2.host"), Kind.FILE, users.VMAIL, 0o600),
    ("control", ("passwd",), Kind.FILE, users.ADMIN, 0o640),
    ("control", ("me",), Kind.FILE, users.ADMIN, 0o644),
    ("run", ("celerybeat-schedule.db",), Kind.FILE, users.ADMIN, 0o660),
])
def test_rows_match_the_paths_they_govern(part: str, rel: tuple[str, ...], kind: Kind,
                                           owner: str, mode: int) -> None:
    rule = rule_for(part, rel, kind)
    assert rule is not None and rule.owners[0] == owner and rule.mode == mode


def test_unknown_paths_match_nothing() -> None:
    assert rule_for("control", ("sub", "dir"), Kind.FILE) is None   # control/ is flat
    assert rule_for("control", ("x",), Kind.DIR) is None
    assert rule_for("run", ("stray",), Kind.FILE) is None
    assert rule_for("tls", ("key.pem",), Kind.FIFO) is None


def test_secrets_go_only_to_their_reader() -> None:
    for name, reader in (("passwd", users.SMTPD), ("relayauth", users.REMOTE)):
        rule = rule_for("control", (name,), Kind.FILE)
        assert rule is not None and rule.group == reader
    # and nobody but the worker is in those groups besides the reader's own primary group
    for a in users.ACCOUNTS:
        if users.SMTPD in a.groups or users.REMOTE in a.groups:
            assert a.name == users.ADMIN


def test_docs_internals_holds_the_generated_table() -> None:
    text = (ROOT / "docs" / "internals.md").read_text(encoding="utf-8")
    assert permissions.docs_section(text) == permissions.render_markdown(), (
        "docs/internals.md 'Permissions' is stale: paste appliance.permissions.render_markdown()")


def test_tmpfiles_lines_create_parents_first() -> None:
    lines = permissions.tmpfiles_lines(StateDir.fhs("/"))
    paths = [line.split()[1] for line in lines]
    assert paths.index("/etc/postern") < paths.index("/etc/postern/control")
    assert "d /run/postern 3771 root postern -" in lines


# --- audit and apply on a real tree (root: chown needs it) --------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, StateDir, IdMap]:
    support.require_root("chown to the table's users")
    support.require("systemd-sysusers")
    install.install(tmp_path, python="/usr/bin/python3", sendmail="/opt/postern/bin/sendmail")
    return tmp_path, StateDir.fhs(tmp_path), IdMap.tree(tmp_path)


def test_a_fresh_install_audits_clean(tree: tuple[Path, StateDir, IdMap]) -> None:
    _root, state, ids = tree
    assert permissions.audit(state, ids) == []


def test_audit_reports_each_kind_of_problem(tree: tuple[Path, StateDir, IdMap]) -> None:
    _root, state, ids = tree
    (state.control / "me").write_text("mx.example\n")
    os.chmod(state.control / "me", 0o666)                     # wrong mode (and owner root)
    (state.run / "stray").write_text("x")                      # nothing allows it
    os.symlink("/etc/shadow", state.control / "rcpthosts")    # a symlink in control/
    os.chmod(state.mail, 0o755)                                # mail readable by all
    found: dict[str, str] = {}
    for problem in permissions.audit(state, ids):
        found[problem.path.name] = found.get(problem.path.name, "") + problem.text + "; "
    assert "mode 0666, want at most 0644" in found["me"]
    assert "owner root:postern, want postern-admin:postern" in found["me"]  # setgid control/
    assert "unexpected file" in found["stray"]
    assert "symlink" in found["rcpthosts"]
    assert "mode 0755, want 0700" in found["mail"]


def test_apply_repairs_owners_and_modes_but_never_follows_symlinks(
        tree: tuple[Path, StateDir, IdMap]) -> None:
    _root, state, ids = tree
    victim = state.root.parent / "victim"
    victim.write_text("not ours")
    os.chmod(victim, 0o600)
    (state.control / "me").write_text("mx.example\n")
    os.chmod(state.queue, 0o777)
    os.symlink(victim, state.control / "locals")
    changed = permissions.apply(state, ids)
    assert any("control/me" in c for c in changed)
    assert stat.S_IMODE(os.stat(state.queue).st_mode) == 0o750
    st = os.stat(state.control / "me")
    assert (st.st_uid, st.st_gid) == (ids.uid(users.ADMIN), ids.gid(users.GROUP_ALL))
    assert (os.stat(victim).st_uid, stat.S_IMODE(os.stat(victim).st_mode)) == (0, 0o600)
    assert [p.path.name for p in permissions.audit(state, ids)] == ["locals"]


def test_broker_folders_keep_their_setgid_bit(tree: tuple[Path, StateDir, IdMap]) -> None:
    """chown(2) clears setgid: apply must set the broker folders' whole mode (2770) after it,
    or what the web writes there would keep the writer's group and the worker (another user)
    could not consume and remove it; audit must call a missing setgid bit a problem."""
    _root, state, ids = tree
    messages = state.root / "broker" / "messages"
    messages.mkdir(parents=True, exist_ok=True)
    os.chown(messages, 0, 0)
    os.chmod(messages, 0o2770)                   # the chown to postern-web will clear it
    permissions.apply(state, ids)
    st = os.stat(messages)
    assert (st.st_uid, st.st_gid) == (ids.uid(users.WEB), ids.gid(users.WEB))
    assert stat.S_IMODE(st.st_mode) == 0o2770
    os.chmod(messages, 0o770)                     # what the old apply left
    problems = [p for p in permissions.audit(state, ids) if p.path == messages]
    assert len(problems) == 1 and "mode 0770, want 2770" in problems[0].text
    assert any(str(messages) in c for c in permissions.apply(state, ids))
    assert stat.S_IMODE(os.stat(messages).st_mode) == 0o2770
    # a row that allows narrower modes still keeps the setgid bit a chown took away
    private = state.root / "broker" / "processed" / "pymp-probe"
    private.mkdir(parents=True)
    os.chmod(private, 0o2700)
    permissions.apply(state, ids)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o2700
    assert os.stat(private).st_uid == ids.uid(users.WEB)
    assert permissions.audit(state, ids) == []


def test_the_web_reads_the_delivery_log_and_writes_nothing_there() -> None:
    for rule in permissions.TABLE:
        if rule.part != "log":
            continue
        assert permissions.access(users.WEB, rule) == "r", rule
        assert permissions.access(users.ADMIN, rule) == "r", rule
        writers = {n for n in permissions.MATRIX_USERS if permissions.access(n, rule) == "rw"}
        assert writers == {users.SEND}, rule
        assert permissions.access("others", rule) == "-", rule
    # postern-log gives nothing but the log
    assert {r.part for r in permissions.TABLE if users.GROUP_LOG in r.groups} == {"log"}


def test_a_directory_swapped_for_a_link_leads_nowhere(tree: tuple[Path, StateDir, IdMap]) -> None:
    """A daemon that replaces one of its directories with a symlink (to /etc, say) must not
    get root's next ``apply`` to chown or chmod what the link points at."""
    _root, state, ids = tree
    outside = state.root.parent / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "inner" / "secret").write_text("root's")
    os.chmod(outside / "inner" / "secret", 0o600)
    (state.mail / "example.org").mkdir()
    os.symlink(outside, state.mail / "example.org" / "bob")
    permissions.apply(state, ids)
    for path in (outside, outside / "inner", outside / "inner" / "secret"):
        assert os.lstat(path).st_uid == 0, path
    assert stat.S_IMODE(os.lstat(outside / "inner" / "secret").st_mode) == 0o600
    assert [p.path.name for p in permissions.audit(state, ids)] == ["bob"]


def test_single_user_audit_checks_only_extra_bits(tmp_path: Path) -> None:
    state = StateDir.single(tmp_path / "var")
    for part in ("root", "control", "tls", "queue", "mail", "run", "log"):
        getattr(state, part).mkdir(parents=True, exist_ok=True)
        os.chmod(getattr(state, part), 0o700)
    (state.control / "passwd").write_text("")
    os.chmod(state.control / "passwd", 0o600)
    assert permissions.audit(state, None) == []
    os.chmod(state.control / "passwd", 0o644)
    problems = permissions.audit(state, None)
    assert [p.path.name for p in problems] == ["passwd"]
    assert "lets other users do more than 0640" in problems[0].text
    os.chmod(state.control / "passwd", 0o660)   # group bits: the user's own group, no matter
    os.chmod(state.run, 0o755)                   # listing a traversable directory: fine
    assert permissions.audit(state, None) == []
    os.chmod(state.mail, 0o701)                  # but traversing mail/ is not
    assert [p.path.name for p in permissions.audit(state, None)] == ["mail"]


def test_a_state_directory_under_a_closed_parent_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "var").mkdir(parents=True)
    os.chmod(closed, 0o700)
    why = rootstate.unreachable(StateDir.single(closed / "var"))
    assert why is not None and f"{closed} is mode 0700" in why
    with pytest.raises(rootstate.UnreachableState, match="could not reach"):
        rootstate.secure(StateDir.single(closed / "var"))


def test_tmpfiles_makes_the_trigger_fifo_at_boot() -> None:
    lines = permissions.tmpfiles_lines(StateDir.fhs("/"))
    assert "p /run/postern/trigger 0660 postern-send postern -" in lines


def test_the_matrix_says_what_issue_7_demands() -> None:
    """The static half of the proof (the runtime half: test_permissions_runtime.py)."""
    top = {part: permissions.directory_rule(part) for part in permissions.PARTS}
    assert permissions.access(users.WEB, top["queue"]) == "-"
    assert permissions.access(users.WEB, top["mail"]) == "-"
    assert permissions.access(users.REMOTE, top["mail"]) == "-"
    assert permissions.access(users.SMTPD, top["queue"]) == "-"
    for rule in permissions.TABLE:
        if rule.part == "queue":
            assert permissions.access(users.VMAIL, rule) in ("-", "r"), rule
            assert permissions.access(users.REMOTE, rule) in ("-", "r"), rule
        if rule.part == "control":
            writers = {name for name in permissions.MATRIX_USERS
                       if permissions.access(name, rule) == "rw"}
            assert writers == {users.ADMIN}, rule
        if rule.part == "mail" and "dovecot-uidvalidity" not in rule.pattern:
            # (Dovecot's 0444 marker is reachable only through the 0700 directories above.)
            assert {name for name in permissions.MATRIX_USERS
                    if permissions.access(name, rule) != "-"} == {users.VMAIL}
    queue_sock = rule_for("run", (ipc.QUEUE_SOCKET,), Kind.SOCKET)
    assert queue_sock is not None and permissions.access("others", queue_sock) == "rw"
    assert permissions.access("others", top["run"]) == "x"
    for rule in permissions.TABLE:  # no queue directory lets web or smtpd in
        if rule.part == "queue" and rule.kind is Kind.DIR:
            assert permissions.access(users.WEB, rule) == "-", rule
            assert permissions.access(users.SMTPD, rule) == "-", rule
