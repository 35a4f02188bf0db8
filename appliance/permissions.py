"""THE permission table: owner, group and mode of every path of a Postern state directory.

One job: hold, as data, who owns what (``TABLE``), and compare it with a real tree. The same
table serves the single-folder state directory (``StateDir.single``) and the installed FHS
layout (``StateDir.fhs``): rows name a *part* of the state directory (``control``, ``queue``,
...) and a pattern below it. ``postern install`` and, as root, ``postern init`` create and fix
paths from it (``apply``); ``postern check`` reports every difference (``audit``);
``docs/internals.md`` "Permissions" is rendered from it (``render_markdown``) and a test keeps
the two identical.

Called by appliance code running as root (or as the one user of a development install).
Walks trees that daemons and admins write: it never follows symlinks (a symlink where the
table expects a file or directory is itself a problem to report) and never opens files.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance import users as u
from appliance.users import IdMap
from mta.common import ipc
from mta.common.paths import StateDir


class Kind(enum.Enum):
    DIR = "directory"
    FILE = "file"
    SOCKET = "socket"
    FIFO = "fifo"


@dataclass(frozen=True)
class Rule:
    """One row: ``part`` of the state directory, ``pattern`` below it ('' = the part itself;
    ``*`` one path segment, ``**`` any number), the kind of inode, who owns it and why."""

    part: str
    pattern: str
    kind: Kind
    owner: str
    group: str
    mode: int
    why: str
    exact: bool = True  # False: written by third-party code; the mode may be narrower
    descend: bool = True  # False: a third party's own tree (Dovecot's); not walked below

    @property
    def owners(self) -> tuple[str, ...]:
        """``owner`` may list alternatives ``a|b`` (files either daemon may create)."""
        return tuple(self.owner.split("|"))

    @property
    def groups(self) -> tuple[str, ...]:
        """``group`` may list alternatives ``a|b`` too."""
        return tuple(self.group.split("|"))

    def allows_mode(self, mode: int) -> bool:
        return mode == self.mode if self.exact else not mode & ~self.mode

    def matches(self, part: str, relative: tuple[str, ...], kind: Kind) -> bool:
        if part != self.part or kind is not self.kind:
            return False
        return _match(tuple(p for p in self.pattern.split("/") if p), relative)


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    if not parts:
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


D, F, S, P = Kind.DIR, Kind.FILE, Kind.SOCKET, Kind.FIFO
ALL, LOG, QREAD = u.GROUP_ALL, u.GROUP_LOG, u.GROUP_QREAD

# First matching row wins, so specific rows come before the catch-alls of their part.
# "parent" is /etc/postern in the FHS layout (the single folder has no such part).
TABLE: Final[tuple[Rule, ...]] = (
    Rule("parent", "", D, "root", "root", 0o755, "holds control/ and tls/ (FHS only)"),
    Rule("root", "", D, "root", u.WEB, 0o1771,
         "traversable by every local user (sendmail reaches run/queue.sock); web creates "
         "SQLite journals here, the sticky bit stops it renaming anything else"),
    Rule("database", "", F, u.WEB, u.WEB, 0o660, "embedded database: web writes, worker reads"),
    Rule("database-journal", "", F, u.WEB, u.WEB, 0o660, "SQLite -wal/-shm/-journal beside it",
         exact=False),
    Rule("root", "secret_key", F, u.WEB, u.WEB, 0o640, "Django's key: web and worker read it"),
    Rule("root", "broker", D, u.WEB, u.WEB, 0o2770, "embedded Celery broker: web and worker"),
    Rule("root", "broker/**/pymp-*", D, f"{u.WEB}|{u.ADMIN}", f"{u.WEB}|{u.ADMIN}", 0o2700,
         "billiard's private temporary directory; its own", exact=False, descend=False),
    Rule("root", "broker/**", D, f"{u.WEB}|{u.ADMIN}", u.WEB, 0o2770,
         "the broker's folders (messages, control, processed): setgid, so every message "
         "either writes gets the group postern-web and the other may consume and remove it"),
    Rule("root", "broker/**", F, f"{u.WEB}|{u.ADMIN}", u.WEB, 0o660, "a broker message",
         exact=False),
    Rule("root", "dovecot", D, "root", "root", 0o755,
         "Dovecot's configuration, rendered by postern run (appliance/dovecot.py)"),
    Rule("root", "dovecot/dovecot.conf", F, "root", "root", 0o644,
         "rewritten at every start; no secrets (it names the passwd file and key by path)"),
    Rule("root", "dovecot/state", D, "root", "root", 0o750,
         "Dovecot's state_dir (its instance list); Dovecot's own", descend=False),

    Rule("control", "", D, u.ADMIN, ALL, 0o2755,
         "only worker writes; everyone reads (sendmail reads me, defaultdomain, as in qmail); "
         "setgid, so every file published gets the group"),
    Rule("control", "passwd", F, u.ADMIN, u.SMTPD, 0o640, "password hashes: smtpd (AUTH) only"),
    Rule("control", "relayauth", F, u.ADMIN, u.REMOTE, 0o640, "smarthost secrets: remote only"),
    Rule("control", "*", F, u.ADMIN, ALL, 0o644, "configuration: worker writes, all read",
         exact=False),

    Rule("tls", "", D, u.ADMIN, u.SMTPD, 0o750, "worker installs keys; smtpd reads them"),
    Rule("tls", "key.pem", F, u.ADMIN, u.SMTPD, 0o640, "the private key: smtpd only"),
    Rule("tls", "*", F, u.ADMIN, u.SMTPD, 0o644, "certificates (public)", exact=False),

    # New files are written in tmp/ (setgid: they get the group postern-qread) and renamed
    # into mess/ and todo/; send removes todo entries and keeps info/, which clean removes.
    Rule("queue", "", D, u.QUEUE, QREAD, 0o750,
         "queue writes; send, local, remote read (group postern-qread); smtpd, web: nothing"),
    Rule("queue", "split", F, u.QUEUE, QREAD, 0o644, "split count, fixed at init"),
    Rule("queue", "lock", F, u.QUEUE, u.QUEUE, 0o600, "flock()ed by the one queue writer"),
    Rule("queue", "tmp", D, u.QUEUE, QREAD, 0o2700,
         "messages being received: queue only; setgid so they get the group postern-qread"),
    Rule("queue", "tmp/*", F, u.QUEUE, QREAD, 0o640, "a message being received", exact=False),
    Rule("queue", "mess", D, u.QUEUE, QREAD, 0o750, "message bodies"),
    Rule("queue", "mess/*", D, u.QUEUE, QREAD, 0o750, "split directory; clean removes"),
    Rule("queue", "mess/*/*", F, u.QUEUE, QREAD, 0o640, "a message: send, local, remote read it"),
    Rule("queue", "todo", D, u.QUEUE, u.SEND, 0o750, "committed envelopes"),
    Rule("queue", "todo/*", D, u.QUEUE, u.SEND, 0o770, "split directory; send removes entries"),
    Rule("queue", "todo/*/*", F, u.QUEUE, QREAD, 0o640, "an envelope: send reads it"),
    Rule("queue", "info", D, u.SEND, u.QUEUE, 0o750, "delivery state: send's"),
    Rule("queue", "info/*", D, u.SEND, u.QUEUE, 0o770, "split directory; clean removes entries"),
    Rule("queue", "info/*/*", F, u.SEND, u.SEND, 0o640, "one message's delivery state",
         exact=False),
    Rule("queue", "*", D, u.SEND, u.QUEUE, 0o750, "further scheduler state (send's)"),
    Rule("queue", "*/*", D, u.SEND, u.QUEUE, 0o770, "further scheduler state; clean removes"),
    Rule("queue", "*/**", F, u.SEND, u.SEND, 0o640, "further scheduler state", exact=False),

    Rule("mail", "", D, u.VMAIL, u.VMAIL, 0o700, "Maildirs: local writes, nobody else reads"),
    Rule("mail", "**", D, u.VMAIL, u.VMAIL, 0o700, "a domain, a mailbox, tmp/new/cur"),
    Rule("mail", "*/*/dovecot-uidvalidity.*", F, u.VMAIL, u.VMAIL, 0o444,
         "Dovecot's UIDVALIDITY marker: Dovecot makes it 0444; the 0700 Maildirs above it "
         "keep everyone but postern-vmail out",
         exact=False),
    Rule("mail", "**", F, u.VMAIL, u.VMAIL, 0o600, "a message"),

    Rule("run", "", D, "root", ALL, 0o3771,
         "daemons bind their sockets here (group postern, setgid so sockets get group "
         "postern, sticky so none replaces another's); others may only traverse"),
    Rule("run", ipc.QUEUE_SOCKET, S, u.QUEUE, ALL, 0o666, "any local user injects (sendmail)"),
    Rule("run", ipc.STATUS_SOCKET, S, u.SEND, ALL, 0o660, "web and `postern queue` read"),
    Rule("run", ipc.LOCAL_SOCKET, S, u.VMAIL, ALL, 0o660, "send hands local deliveries"),
    Rule("run", ipc.REMOTE_SOCKET, S, u.REMOTE, ALL, 0o660, "send hands remote deliveries"),
    Rule("run", ipc.CLEAN_SOCKET, S, u.QUEUE, ALL, 0o660, "send asks for removal"),
    Rule("run", ipc.TRIGGER_FIFO, P, u.SEND, ALL, 0o660, "queue pokes send after a commit"),
    Rule("run", "celerybeat-schedule*", F, u.ADMIN, ALL, 0o660,
         "Celery beat's schedule (its dbm makes it 0660 whatever the umask)", exact=False),
    Rule("run", "dovecot", D, "root", ALL, 0o2755,
         "Dovecot's base_dir: its sockets and pid, owned and moded by Dovecot itself",
         exact=False, descend=False),

    Rule("log", "", D, u.SEND, LOG, 0o2750,
         "send appends and rotates; worker and web read (group postern-log, setgid so every "
         "rotation gets it), nobody else writes"),
    Rule("log", "*", F, u.SEND, LOG, 0o640, "delivery log and its rotations", exact=False),
)

# Parts that exist in both layouts, in the order they are created.
PARTS: Final = ("root", "parent", "control", "tls", "queue", "mail", "run", "log")
# Parts an uninstall keeps unless --purge.
PRECIOUS: Final = frozenset({"queue", "mail", "control", "tls", "database", "log"})
SQLITE_SUFFIXES: Final = ("-wal", "-shm", "-journal")


def part_paths(state: StateDir) -> dict[str, Path]:
    """Where each part of the table lives in ``state`` (FHS: 'parent' is /etc/postern)."""
    out = {"root": state.root, "control": state.control, "tls": state.tls,
           "queue": state.queue, "mail": state.mail, "run": state.run, "log": state.log}
    parent = state.control.parent
    if parent != state.root and parent == state.tls.parent:
        out["parent"] = parent
    return {name: out[name] for name in PARTS if name in out}  # parents before children


def rule_for(part: str, relative: tuple[str, ...], kind: Kind) -> Rule | None:
    for rule in TABLE:
        if rule.matches(part, relative, kind):
            return rule
    return None


def directory_rule(part: str) -> Rule:
    found = rule_for(part, (), Kind.DIR)
    assert found is not None, part
    return found


def kind_of(mode: int) -> Kind | None:
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISSOCK(mode):
        return Kind.SOCKET
    if stat.S_ISFIFO(mode):
        return Kind.FIFO
    return None  # symlinks, devices: never expected anywhere in the state directory


# --- walking a tree --------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """One inode: where it is, which row governs it (None: nothing allows it here), and
    how to reach it safely: ``name`` inside the directory open as ``dir_fd`` (the top of a
    part has no parent open: ``dir_fd`` is then the part's own descriptor and ``name``
    is None)."""

    path: Path
    part: str
    relative: tuple[str, ...]
    st: os.stat_result
    rule: Rule | None
    dir_fd: int = -1
    name: str | None = None


_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def walk(state: StateDir) -> Iterator[Found]:
    """Every inode of the state directory, each with the row that governs it.

    Daemons write these trees and root walks them, so the walk never follows a symlink: each
    directory is opened with O_NOFOLLOW relative to its parent's descriptor, and checked to
    be the inode that was listed, so a directory swapped for a link on the way is skipped.
    The descriptors in a ``Found`` are valid until the generator moves on. Paths of one part
    found under another part's directory (the single folder nests every part in ``root``)
    belong to the inner part.
    """
    parts = part_paths(state)
    owners = set(parts.values())
    for name, top in parts.items():
        try:
            fd = os.open(top, _DIR_FLAGS)
        except FileNotFoundError:
            continue
        except OSError:  # a symlink (ELOOP) or not a directory: report what is there
            try:
                st = os.lstat(top)
            except FileNotFoundError:
                continue
            kind = kind_of(st.st_mode)
            yield Found(top, name, (), st, rule_for(name, (), kind) if kind else None)
            continue
        try:
            yield Found(top, name, (), os.fstat(fd), directory_rule(name), dir_fd=fd)
            yield from _walk_dir(fd, top, name, (), owners, state.database)
        finally:
            os.close(fd)


def _walk_dir(dir_fd: int, path: Path, part: str, rel: tuple[str, ...], owners: set[Path],
              database: Path) -> Iterator[Found]:
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError:
        return
    for entry in names:
        child = path / entry
        if child in owners:
            continue  # another part, walked on its own
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed meanwhile: daemons keep working while we look
        kind = kind_of(st.st_mode)
        erel, epart = (*rel, entry), part
        if part in ("root", "parent") and not rel and kind is Kind.FILE:
            if child == database:
                epart, erel = "database", ()
            elif any(child.name == database.name + s for s in SQLITE_SUFFIXES):
                epart, erel = "database-journal", ()
        rule = rule_for(epart, erel, kind) if kind else None
        yield Found(child, epart, erel, st, rule, dir_fd=dir_fd, name=entry)
        if kind is Kind.DIR and rule is not None and rule.descend:
            try:
                sub = os.open(entry, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                now = os.fstat(sub)
                if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                    yield from _walk_dir(sub, child, epart, erel, owners, database)
            finally:
                os.close(sub)


# --- auditing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    path: Path
    text: str

    def __str__(self) -> str:
        return f"{self.path}: {self.text}"


def audit(state: StateDir, ids: IdMap | None, *, require_all: bool = True) -> list[Problem]:
    """Every difference between ``state`` and the table.

    ``ids`` maps the table's names to numbers; ``None`` means a single-user install (an
    ordinary user runs everything): owners are then not compared, only modes, and every
    inode must belong to the state directory's owner. ``require_all``: report missing parts.
    """
    problems: list[Problem] = []
    parts = part_paths(state)
    if require_all:
        for name, path in parts.items():
            if not os.path.lexists(path):
                problems.append(Problem(path, f"missing ({directory_rule(name).why})"))
    single_owner: int | None = None
    if ids is None:
        try:
            single_owner = os.lstat(state.root).st_uid
        except FileNotFoundError:
            return problems
    for found in walk(state):
        st, rule = found.st, found.rule
        kind = kind_of(st.st_mode)
        if kind is None:
            problems.append(Problem(found.path, "a symlink or device: not allowed here"))
            continue
        if rule is None:
            problems.append(Problem(found.path, f"unexpected {kind.value} here"))
            continue
        mode = stat.S_IMODE(st.st_mode)
        if ids is not None and not rule.allows_mode(mode):
            want = "" if rule.exact else "at most "
            problems.append(Problem(found.path, f"mode {mode:04o}, want {want}{rule.mode:04o} "
                                                f"({rule.why})"))
        elif ids is None and _strangers_gain(rule, mode):
            problems.append(Problem(found.path, f"mode {mode:04o} lets other users do more "
                                                f"than {rule.mode:04o} ({rule.why})"))
        if ids is None:
            if st.st_uid != single_owner:
                problems.append(Problem(found.path, f"owner uid {st.st_uid}, want {single_owner}"
                                                    " (the state directory's owner)"))
            continue
        try:
            want_uids = {ids.uid(name) for name in rule.owners}
            want_gids = {ids.gid(name) for name in rule.groups}
        except LookupError as exc:
            problems.append(Problem(found.path, str(exc)))
            continue
        if kind in (Kind.SOCKET, Kind.FIFO):
            want_uids.add(0)  # made by a daemon `postern run` started as root, before it dropped
        if st.st_uid not in want_uids or st.st_gid not in want_gids:
            problems.append(Problem(
                found.path, f"owner {ids.user_name(st.st_uid)}:{ids.group_name(st.st_gid)}, "
                            f"want {rule.owner}:{rule.group} ({rule.why})"))
    return problems


def _strangers_gain(rule: Rule, mode: int) -> bool:
    """Single-user check: one user runs everything, so the group bits name nobody in
    particular (often the user's own group); what matters is what *other* users may do. A
    directory the table lets them traverse may as well be listed: its names are documented."""
    extra = mode & 0o007 & ~rule.mode
    if rule.kind is Kind.DIR and rule.mode & 0o001:
        extra &= ~0o004
    return bool(extra)


# --- applying ------------------------------------------------------------------------------

def apply(state: StateDir, ids: IdMap, *, create: bool = True) -> list[str]:
    """Create the table's directories (``create``) and give every existing inode its row's
    owner, group and mode. Returns what it changed. Never follows a symlink: one found
    where the table expects something is left alone (``audit`` reports it).
    """
    changed: list[str] = []
    parts = part_paths(state)
    if create:
        for name in PARTS:
            path = parts.get(name)
            if path is None:
                continue
            if not os.path.lexists(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(path, 0o700)
                changed.append(f"created {path}")
    for found in walk(state):
        rule = found.rule
        if rule is None:
            continue
        try:
            changed += _fix(found, rule, ids)
        except FileNotFoundError:
            continue  # removed meanwhile (a delivered message, a rotated log)
    return changed


def _fix(found: Found, rule: Rule, ids: IdMap) -> list[str]:
    """Give one inode its row's owner and mode, through descriptors, never through a link."""
    changed = []
    st = found.st
    allowed = {ids.uid(name) for name in rule.owners}
    if rule.kind in (Kind.SOCKET, Kind.FIFO):
        allowed.add(0)
    uid = st.st_uid if st.st_uid in allowed else ids.uid(rule.owners[0])
    gids = {ids.gid(name) for name in rule.groups}
    gid = st.st_gid if st.st_gid in gids else ids.gid(rule.groups[0])
    if (st.st_uid, st.st_gid) != (uid, gid):
        if found.name is None:
            os.fchown(found.dir_fd, uid, gid)
        else:
            os.chown(found.name, uid, gid, dir_fd=found.dir_fd, follow_symlinks=False)
        changed.append(f"chown {ids.user_name(uid)}:{ids.group_name(gid)} {found.path}")
    # chown clears the setgid bit, so look again and set the mode after it, always.
    if found.name is None:
        now = os.fstat(found.dir_fd)
    else:
        now = os.stat(found.name, dir_fd=found.dir_fd, follow_symlinks=False)
    if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or kind_of(now.st_mode) is not rule.kind:
        return changed  # replaced meanwhile: leave it for the next run (audit reports it)
    mode = stat.S_IMODE(now.st_mode)
    # A narrower row keeps the setgid/sticky bits it allows that the chown above cleared.
    lost = 0 if rule.exact else stat.S_IMODE(st.st_mode) & rule.mode & ~mode & 0o7000
    if lost or not rule.allows_mode(mode):
        new = rule.mode if rule.exact else (mode | lost) & rule.mode
        try:
            if found.name is None:
                os.fchmod(found.dir_fd, new)
            else:  # fchmodat(AT_SYMLINK_NOFOLLOW): refuses a symlink swapped in meanwhile
                os.chmod(found.name, new, dir_fd=found.dir_fd, follow_symlinks=False)
        except (ValueError, NotImplementedError):
            return changed
        changed.append(f"chmod {new:04o} {found.path}")
    return changed


def tmpfiles_lines(state: StateDir) -> list[str]:
    """``tmpfiles.d(5)`` lines that (re)create each directory of the table at boot.

    /run is a tmpfs, so run/ must be made at every boot; the others are asserted so that an
    image whose users were created on first boot gets the right owners then.
    """
    lines = []
    for name, path in part_paths(state).items():
        rule = directory_rule(name)
        lines.append(f"d {path} {rule.mode:04o} {rule.owner} {rule.group} -")
    fifo = rule_for("run", (ipc.TRIGGER_FIFO,), Kind.FIFO)
    assert fifo is not None
    lines.append(f"p {state.trigger} {fifo.mode:04o} {fifo.owners[0]} {fifo.group} -")
    return lines


# --- documentation -------------------------------------------------------------------------

DOC_BEGIN: Final = "<!-- permissions table: generated by appliance/permissions.py; do not edit -->"
DOC_END: Final = "<!-- end of permissions table -->"

def _locations(part: str, pattern: str) -> tuple[str, str]:
    """(single-folder path, FHS path) of a row, for the documentation."""
    single, fhs = StateDir.single("/var"), StateDir.fhs("/")
    if part == "parent":
        return "-", "/etc/postern"
    if part in ("database", "database-journal"):
        suffix = "" if part == "database" else "{-wal,-shm,-journal}"
        return f"var/db.sqlite3{suffix}", f"{fhs.database}{suffix}"
    a, b = part_paths(single)[part], part_paths(fhs)[part]
    rel_a = "var" + str(a)[len("/var"):]
    tail = f"/{pattern}" if pattern else "/"
    return rel_a + tail, str(b) + tail


MATRIX_USERS: Final = (*(a.name for a in u.ACCOUNTS), "others")


def access(user: str, rule: Rule) -> str:
    """What ``user`` ("others": any other local user) may do with a row's inodes, from the
    row and the user's groups: for a directory ``rw`` (create, remove), ``r`` (list and
    open what is inside), ``x`` (only pass through), ``-``; for a file ``rw``/``r``/``-``;
    for a socket or FIFO ``rw`` means connect or write."""
    if user == "others":
        bits = rule.mode & 0o7
    elif user in rule.owners:
        bits = (rule.mode >> 6) & 0o7
    elif set(rule.groups) & {user, *u.account(user).groups}:
        bits = (rule.mode >> 3) & 0o7
    else:
        bits = rule.mode & 0o7
    if rule.kind is Kind.DIR:
        if not bits & 1:
            return "-"
        return "rw" if bits & 2 and bits & 4 else "r" if bits & 4 else "x"
    if rule.kind in (Kind.SOCKET, Kind.FIFO):
        return "rw" if bits & 2 else "-"
    return "rw" if bits & 6 == 6 else "r" if bits & 4 else "-"


def render_matrix() -> list[str]:
    """Who may do what, per row of the table (the issue's "for each daemon, what it may read
    and write"), computed from the rows and the users' groups."""
    by_user: dict[str, list[str]] = {}
    for daemon, name in ipc.DAEMON_USERS.items():
        by_user.setdefault(name, []).append(daemon.value)
    heads = [f"{'/'.join(by_user[n])}" if n in by_user else n for n in MATRIX_USERS]
    rows = ["| path (single folder) | " + " | ".join(heads) + " |",
            "|---|" + "---|" * len(heads)]
    for rule in TABLE:
        if rule.part in ("parent", "database-journal") or rule.exact is False and \
                rule.kind is Kind.FILE and rule.part != "log":
            continue
        single, _fhs = _locations(rule.part, rule.pattern)
        cells = [access(name, rule) for name in MATRIX_USERS]
        rows.append(f"| `{single}` ({rule.kind.value}) | " + " | ".join(cells) + " |")
    return rows


def render_markdown() -> str:
    """The table as it appears in docs/internals.md, between DOC_BEGIN and DOC_END."""
    rows = [DOC_BEGIN, "", "| path (single folder) | installed (FHS) | kind | owner | group | mode "
            "| why |", "|---|---|---|---|---|---|---|"]
    for rule in TABLE:
        single, fhs = _locations(rule.part, rule.pattern)
        owner = " or ".join(rule.owners)
        rows.append(f"| `{single}` | `{fhs}` | {rule.kind.value} | {owner} | "
                    f"{' or '.join(rule.groups)}"
                    f" | {rule.mode:04o} | {rule.why} |")
    rows += ["", "Users and their groups (`appliance/users.py`); each user's primary group has "
             "its own name:", "",
             "| user | daemons | supplementary groups |", "|---|---|---|"]
    by_user: dict[str, list[str]] = {}
    for daemon, name in ipc.DAEMON_USERS.items():
        by_user.setdefault(name, []).append(daemon.value)
    for a in u.ACCOUNTS:
        rows.append(f"| {a.name} | {', '.join(by_user[a.name])} | {', '.join(a.groups)} |")
    rows += ["", "What each daemon may do, computed from the rows above and those groups "
             "(`rw` create and remove, or write; `r` list and read; `x` pass through only; "
             "`-` nothing):", "", *render_matrix(), "", DOC_END]
    return "\n".join(rows)


def docs_section(text: str) -> str | None:
    """The generated table inside a docs/internals.md text, or None if absent."""
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(DOC_END)]


def update_docs(path: Path) -> bool:
    """Replace the generated table in ``path`` (docs/internals.md); True if it changed."""
    text = path.read_text(encoding="utf-8")
    current = docs_section(text)
    if current is None:
        raise ValueError(f"{path} has no {DOC_BEGIN!r} marker")
    new = text.replace(current, render_markdown())
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m appliance.permissions docs/internals.md
    import sys

    for name in sys.argv[1:]:
        print(f"{name}: {'updated' if update_docs(Path(name)) else 'up to date'}")
