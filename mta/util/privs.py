"""Dropping root for good: setgroups, setgid, setuid, then prove it cannot come back.

NAME
    privs — the one way a daemon started as root becomes its own user.

DESCRIPTION
    Every ``mta/<daemon>/main.py`` started as root with ``--user USER`` binds its sockets,
    then calls ``drop_privileges(USER)`` before it reads anything from a peer. The order is
    the classic one and it matters: supplementary groups first (while we may still change
    them), then the group ids, then the user ids, each with the ``setres*`` call so the real,
    effective and saved ids all change. Nothing is assumed: afterwards every id is read back
    and compared, and regaining root (uid and gid 0) must fail. Any surprise raises
    ``PrivilegeError`` and the daemon must exit rather than run with privileges it should
    not have.

SECURITY
    Runs as root, once, at daemon start-up. Trusts the system user database (``pwd``,
    ``grp``); the user name comes from the supervisor's command line, never from a peer.

SEE ALSO
    DESIGN.md "Processes" (which user runs what), mta/common/ipc.py ``DAEMON_USERS``,
    issue 7 (privilege separation).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass


class PrivilegeError(RuntimeError):
    """Dropping privileges failed or could not be verified; the caller must exit."""


@dataclass(frozen=True)
class Identity:
    """Who a process became: the user's name, uid, primary gid and every group it holds."""

    user: str
    uid: int
    gid: int
    groups: frozenset[int]


def lookup(user: str) -> Identity:
    """The identity ``user`` gets after a drop: its uid, primary gid and all its groups."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user: {user!r}") from None
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Identity(user=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def drop_privileges(user: str) -> Identity:
    """Become ``user`` irrevocably: setgroups, setresgid, setresuid, then verify.

    Args:
        user: a system user name (e.g. ``postern-queue``), not root.

    Returns:
        The identity the process now has.

    Raises:
        PrivilegeError: not running as root, ``user`` is unknown or is root itself, or any id
            did not change as asked, or root could be regained afterwards.
    """
    target = lookup(user)
    if target.uid == 0 or target.gid == 0:
        raise PrivilegeError(f"refusing to 'drop' to {user!r}: it has uid or gid 0")
    if os.geteuid() != 0:
        raise PrivilegeError(f"cannot become {user!r}: not running as root")
    try:
        os.setgroups(sorted(target.groups))
        os.setresgid(target.gid, target.gid, target.gid)
        os.setresuid(target.uid, target.uid, target.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot become {user!r}: {exc}") from exc
    verify(target)
    return target


def verify(target: Identity) -> None:
    """Check that every id is ``target``'s and that neither uid 0 nor gid 0 comes back."""
    if os.getresuid() != (target.uid,) * 3:
        raise PrivilegeError(f"user ids are {os.getresuid()}, expected {target.uid}")
    if os.getresgid() != (target.gid,) * 3:
        raise PrivilegeError(f"group ids are {os.getresgid()}, expected {target.gid}")
    if frozenset(os.getgroups()) - target.groups:
        raise PrivilegeError(f"supplementary groups {sorted(os.getgroups())} exceed "
                             f"{sorted(target.groups)}")
    attempts: list[Callable[[], None]] = [
        lambda: os.setuid(0), lambda: os.seteuid(0), lambda: os.setgid(0),
        lambda: os.setegid(0), lambda: os.setgroups([0])]
    for attempt in attempts:
        try:
            attempt()
        except PermissionError:
            continue
        raise PrivilegeError("privileges could be regained after dropping them")


def group_name(gid: int) -> str:
    """A group's name for messages, or its number if it has none."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
