"""The system users and groups of a privilege-separated Postern, and how to create them.

One job: say which accounts exist (one user per daemon, from ``mta.common.ipc.DAEMON_USERS``,
plus the shared groups of the permission table) and create them, either on this machine
(``groupadd``/``useradd``/``usermod`` run with argv lists, never a shell) or, for an image
built into a tree, as a ``sysusers.d`` file that systemd applies on first boot (and that
``systemd-sysusers --root`` can apply to the tree at once).

Called by ``postern install`` and, when run as root, by ``postern init``/``postern run``.
Reads /etc/passwd and /etc/group (through ``pwd``/``grp``, or the files of an image tree);
trusts them, as every program on the machine does. Nothing here comes from the network.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mta.common import ipc

# Shared groups (the permission table in appliance/permissions.py says what each grants).
GROUP_ALL: Final = "postern"          # read control/, connect to run/*.sock, bind in run/
GROUP_LOG: Final = "postern-log"      # read log/delivery.log (send, its owner, writes it)
GROUP_QREAD: Final = "postern-qread"  # read queued messages and envelopes (queue/mess, todo)
HOME: Final = "/nonexistent"          # system users own no home (Debian's convention)
NOLOGIN: Final = "/usr/sbin/nologin"
SYSUSERS_NAME: Final = "postern.conf"

# Users by name (not by daemon: clean shares postern-queue with queue).
SMTPD = ipc.DAEMON_USERS[ipc.Daemon.SMTPD]
QUEUE = ipc.DAEMON_USERS[ipc.Daemon.QUEUE]
SEND = ipc.DAEMON_USERS[ipc.Daemon.SEND]
VMAIL = ipc.DAEMON_USERS[ipc.Daemon.LOCAL]
REMOTE = ipc.DAEMON_USERS[ipc.Daemon.REMOTE]
WEB = ipc.DAEMON_USERS[ipc.Daemon.WEB]
ADMIN = ipc.DAEMON_USERS[ipc.Daemon.WORKER]


@dataclass(frozen=True)
class Account:
    """A system user whose primary group has its own name, plus supplementary groups."""

    name: str
    comment: str
    groups: tuple[str, ...]


# Why each supplementary group (see docs/internals.md "Permissions"):
#   postern       read control/, reach the sockets in run/
#   postern-qread read queue/mess and queue/todo (send schedules, local and remote deliver)
#   postern-log   read the delivery log (send owns log/ and alone writes it; admin and web
#                 read it: the worker samples it, the web's delivery-log page searches it)
#   postern-web   the embedded SQLite database (worker reads it; web owns it)
#   postern-smtpd, postern-remote  let the worker give passwd / relayauth to their one reader
ACCOUNTS: Final[tuple[Account, ...]] = (
    Account(SMTPD, "Postern SMTP server", (GROUP_ALL,)),
    Account(QUEUE, "Postern queue writer and cleaner", (GROUP_ALL,)),
    Account(SEND, "Postern scheduler", (GROUP_ALL, GROUP_QREAD)),
    Account(VMAIL, "Postern local delivery (Maildirs)", (GROUP_ALL, GROUP_QREAD)),
    Account(REMOTE, "Postern remote delivery", (GROUP_ALL, GROUP_QREAD)),
    Account(WEB, "Postern web application", (GROUP_ALL, GROUP_LOG)),
    Account(ADMIN, "Postern publisher (celery worker)",
            (GROUP_ALL, WEB, SMTPD, REMOTE, GROUP_LOG)),
)

SHARED_GROUPS: Final[tuple[str, ...]] = (GROUP_ALL, GROUP_LOG, GROUP_QREAD)

assert {a.name for a in ACCOUNTS} == set(ipc.DAEMON_USERS.values()), "an ipc user has no account"


def all_groups() -> list[str]:
    """Every group Postern needs: the shared ones, then one per account."""
    return [*SHARED_GROUPS, *(a.name for a in ACCOUNTS)]


def account(name: str) -> Account:
    for a in ACCOUNTS:
        if a.name == name:
            return a
    raise KeyError(name)


def render_sysusers() -> str:
    """The ``sysusers.d(5)`` file that creates every group, user and membership."""
    lines = ["# Postern's system users and groups (written by `postern install`).",
             "# One user per daemon; see docs/internals.md \"Permissions\".", ""]
    for group in SHARED_GROUPS:
        lines.append(f"g {group} -")
    for a in ACCOUNTS:
        lines.append(f'u {a.name} - "{a.comment}" {HOME} {NOLOGIN}')
    lines.append("")
    for a in ACCOUNTS:
        for group in a.groups:
            lines.append(f"m {a.name} {group}")
    return "\n".join(lines) + "\n"


# --- ids ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdMap:
    """Names to numeric ids, either this machine's or an image tree's /etc files."""

    users: dict[str, int]
    groups: dict[str, int]
    members: dict[str, frozenset[str]]  # group -> supplementary members

    @classmethod
    def system(cls) -> "IdMap":
        users = {p.pw_name: p.pw_uid for p in pwd.getpwall()}
        groups = {g.gr_name: g.gr_gid for g in grp.getgrall()}
        members = {g.gr_name: frozenset(g.gr_mem) for g in grp.getgrall()}
        return cls(users, groups, members)

    @classmethod
    def tree(cls, root: Path) -> "IdMap":
        """Read ``root/etc/passwd`` and ``root/etc/group`` (missing files: no entries)."""
        users: dict[str, int] = {}
        groups: dict[str, int] = {}
        members: dict[str, frozenset[str]] = {}
        for line in _lines(root / "etc/passwd"):
            f = line.split(":")
            if len(f) >= 3 and f[2].isascii() and f[2].isdigit():
                users[f[0]] = int(f[2])
        for line in _lines(root / "etc/group"):
            f = line.split(":")
            if len(f) >= 3 and f[2].isascii() and f[2].isdigit():
                groups[f[0]] = int(f[2])
                members[f[0]] = frozenset(m for m in (f[3] if len(f) > 3 else "").split(",") if m)
        return cls(users, groups, members)

    def uid(self, name: str) -> int:
        if name == "root":
            return 0
        try:
            return self.users[name]
        except KeyError:
            raise LookupError(f"user {name} does not exist (run `postern install`)") from None

    def gid(self, name: str) -> int:
        if name == "root":
            return 0
        try:
            return self.groups[name]
        except KeyError:
            raise LookupError(f"group {name} does not exist (run `postern install`)") from None

    def user_name(self, uid: int) -> str:
        if uid == 0:
            return "root"
        for name, value in self.users.items():
            if value == uid:
                return name
        return str(uid)

    def group_name(self, gid: int) -> str:
        if gid == 0:
            return "root"
        for name, value in self.groups.items():
            if value == gid:
                return name
        return str(gid)

    def missing(self) -> list[str]:
        """What is not there yet: 'user X', 'group Y', 'X not in Y'."""
        out = [f"group {g}" for g in all_groups() if g not in self.groups]
        out += [f"user {a.name}" for a in ACCOUNTS if a.name not in self.users]
        for a in ACCOUNTS:
            for g in a.groups:
                if g in self.groups and a.name not in self.members.get(g, frozenset()):
                    out.append(f"{a.name} not in group {g}")
        return out


def _lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and ln[0] != "#"]
    except FileNotFoundError:
        return []


# --- creating them --------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], None]


def run_checked(argv: Sequence[str]) -> None:
    """Run one account tool; its own error message is the one the admin sees."""
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()}")


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not found:
        raise RuntimeError(f"{name} not found: install the passwd package, or use "
                           f"`postern install --root DIR` to write a sysusers.d file instead")
    return found


def ensure_system_users(run: Runner = run_checked) -> list[str]:
    """Create on this machine whatever group, user or membership is missing.

    Idempotent: returns the list of things it created (empty on a second run).
    """
    done: list[str] = []
    ids = IdMap.system()
    for group in all_groups():
        if group not in ids.groups:
            run([_tool("groupadd"), "--system", group])
            done.append(f"group {group}")
    for a in ACCOUNTS:
        if a.name not in ids.users:
            run([_tool("useradd"), "--system", "--gid", a.name, "--no-create-home",
                 "--home-dir", HOME, "--shell", NOLOGIN, "--comment", a.comment, a.name])
            done.append(f"user {a.name}")
    ids = IdMap.system()
    for a in ACCOUNTS:
        for group in a.groups:
            if a.name not in ids.members.get(group, frozenset()):
                run([_tool("usermod"), "--append", "--groups", group, a.name])
                done.append(f"{a.name} in group {group}")
        # A membership an older version gave is a privilege this one does not mean to give.
        # Only our own users in our own groups: an admin may add others (e.g. dovecot).
        for group in all_groups():
            if group not in a.groups and a.name in ids.members.get(group, frozenset()):
                run([_tool("gpasswd"), "--delete", a.name, group])
                done.append(f"{a.name} no longer in group {group}")
    return done


def remove_system_users(run: Runner = run_checked) -> list[str]:
    """Delete Postern's users and groups from this machine (``postern uninstall --purge``)."""
    done: list[str] = []
    ids = IdMap.system()
    for a in ACCOUNTS:
        if a.name in ids.users:
            run([_tool("userdel"), a.name])
            done.append(f"user {a.name}")
    ids = IdMap.system()
    for group in all_groups():
        if group in ids.groups:
            run([_tool("groupdel"), group])
            done.append(f"group {group}")
    return done


def apply_sysusers_to_tree(root: Path, config: Path, run: Runner = run_checked) -> bool:
    """Create the users inside an image tree with ``systemd-sysusers --root``.

    Returns False (and does nothing) when systemd-sysusers is not installed: the sysusers.d
    file then creates them on the image's first boot.
    """
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        return False
    (root / "etc").mkdir(parents=True, exist_ok=True)  # sysusers locks etc/.pwd.lock there
    run([tool, f"--root={root}", str(config)])
    return True
