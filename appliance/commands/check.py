"""``postern check``: the effective configuration and every permission problem (qmail-showctl).

Run by admins (as root for a full view) and by tests. Prints, for the state directory given
with ``--state`` (``fhs`` for an installed system): where each part lives, who runs each
daemon, each control file's effective value (secrets only counted), whether the units and
/usr/sbin/sendmail are installed; then every difference from the permission table
(``appliance.permissions``). Exit status 0 when there is no problem, 1 otherwise.

Reads control files written by the web app or by hand: untrusted, so each is read with a size
limit, never followed through a symlink, and printed only after ``parse_lines`` accepted it.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any, Final

from appliance import permissions, users
from appliance.install import (SENDMAIL_LINKS, TARGET, UNIT_DIR, default_python, render_unit,
                               unit_names)
from appliance.users import IdMap
from mta.common import ipc
from mta.common.control import MAX_CONTROL_FILE, ControlError, parse_lines
from mta.common.paths import StateDir

SECRET_FILES: Final = frozenset({"passwd", "relayauth"})
SHOWN_LINES: Final = 5
# qmail's control files (DESIGN.md "Control files") and the value in force when one is
# absent (docs/control.md's "default" column; qmail's own default where it says nothing).
QMAIL_DEFAULTS: Final = {
    "me": "none: run `postern init`", "rcpthosts": "no domain (fail closed)",
    "locals": "the contents of me", "virtualdomains": "none", "smtproutes": "none (MX for all)",
    "databytes": "0 (no limit)", "timeoutsmtpd": "1200", "timeoutremote": "1200",
    "timeoutconnect": "60", "concurrencylocal": "20", "concurrencyremote": "20",
    "queuelifetime": "604800", "bouncefrom": "MAILER-DAEMON", "bouncehost": "me",
    "doublebounceto": "postmaster", "doublebouncehost": "me",
    "defaultdomain": "me without its first label", "helohost": "me", "badmailfrom": "none",
}
QMAIL_FILES: Final = tuple(QMAIL_DEFAULTS)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="show the effective configuration and every permission problem",
        description="Like qmail-showctl: print the effective configuration, then every "
                    "difference between the state directory and the permission table.")
    parser.add_argument("--root", metavar="DIR", type=Path,
                        help="check the installed layout inside this image tree, against the "
                             "users of its own /etc/passwd and /etc/group")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if getattr(args, "root", None) is not None:
        lines, problems = check(StateDir.fhs(args.root), ids=IdMap.tree(args.root))
    else:
        lines, problems = check(StateDir.from_arg(args.state))
    for line in lines:
        print(line, file=out)
    print("", file=out)
    if problems:
        print(f"permission problems ({len(problems)}):", file=out)
        for problem in problems:
            print(f"  {problem}", file=out)
        return 1
    print("permission problems: none", file=out)
    return 0


def privileged(state: StateDir) -> bool:
    """Whether the table's users apply: the state root belongs to root (an installed or
    root-run appliance). Owned by anyone else, one ordinary user runs everything."""
    try:
        return os.lstat(state.root).st_uid == 0
    except FileNotFoundError:
        return os.geteuid() == 0


def check(state: StateDir, ids: IdMap | None | bool = True
          ) -> tuple[list[str], list[permissions.Problem]]:
    """The report's lines and the problems found.

    ``ids``: True (default) decides from the state directory (root-owned: the table's users
    from this machine's account database; else single-user); an ``IdMap`` (an image tree's)
    or None (single-user) forces the choice.
    """
    lines: list[str] = []
    problems: list[permissions.Problem] = []
    if ids is True:
        ids = IdMap.system() if privileged(state) else None
    assert ids is None or isinstance(ids, IdMap)
    if not os.path.isdir(state.root):
        return [f"state directory {state.root} does not exist (run `postern init`)"], [
            permissions.Problem(state.root, "missing")]

    lines.append("layout:")
    for name, path in permissions.part_paths(state).items():
        lines.append(f"  {name:8} {path}")
    lines.append(f"  {'database':8} {state.database}")

    lines.append("")
    if ids is None:
        owner = _owner_name(state.root)
        lines.append(f"users: every daemon runs as {owner} (single-user state directory)")
    else:
        lines.append("users (one per daemon):")
        for daemon, name in ipc.DAEMON_USERS.items():
            uid = ids.users.get(name)
            lines.append(f"  {daemon.value:7} {name:15} "
                         f"{'uid ' + str(uid) if uid is not None else 'MISSING'}")
        for missing in ids.missing():
            problems.append(permissions.Problem(Path("/etc/passwd"),
                                                f"{missing} (run `postern install`)"))

    lines.append("")
    lines.append(f"control files ({state.control}):")
    config_lines, config_problems = effective_configuration(state)
    lines += config_lines
    problems += config_problems

    if state == StateDir.fhs():
        lines.append("")
        unit = Path("/") / UNIT_DIR / TARGET
        lines.append(f"systemd units: {'installed' if unit.exists() else 'not installed'}"
                     f" ({unit})")
        if unit.exists():
            for name, why in stale_units(Path("/") / UNIT_DIR):
                problems.append(permissions.Problem(Path("/") / UNIT_DIR / name, why))
        for link in SENDMAIL_LINKS:
            path = Path("/") / link
            what = os.readlink(path) if path.is_symlink() else (
                "another program" if path.exists() else "absent")
            lines.append(f"/{link}: {what}")

    problems += permissions.audit(state, ids)
    return lines, problems


def stale_units(unit_dir: Path) -> list[tuple[str, str]]:
    """Installed units that are missing or differ from what this version renders."""
    out = []
    for name in unit_names():
        path = unit_dir / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            out.append((name, "missing (run `postern install`)"))
            continue
        python = default_python()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            # the interpreter runs `-m module` (postern-dovecot runs it before dovecot)
            if key in ("ExecStart", "ExecStartPre") and " -m " in value:
                python = value.split()[0]
                break
        if text != render_unit(name, python=python):
            out.append((name, "differs from this version's unit (run `postern install`)"))
    return out


def effective_configuration(state: StateDir) -> tuple[list[str], list[permissions.Problem]]:
    lines: list[str] = []
    problems: list[permissions.Problem] = []
    present: dict[str, Path] = {}
    try:
        for entry in sorted(os.scandir(state.control), key=lambda e: e.name):
            if not entry.name.startswith("."):
                present[entry.name] = Path(entry.path)
    except FileNotFoundError:
        return [f"  (no {state.control})"], []  # audit() reports the missing directory
    names = sorted(set(present) | set(QMAIL_FILES))
    for name in names:
        path = present.get(name)
        if path is None:
            lines.append(f"  {name}: (default) {QMAIL_DEFAULTS.get(name, '')}".rstrip())
            continue
        value, problem = _read_control(path)
        if problem is not None:
            problems.append(permissions.Problem(path, problem))
            lines.append(f"  {name}: UNREADABLE ({problem})")
            continue
        assert value is not None
        if name in SECRET_FILES:
            lines.append(f"  {name}: {len(value)} entries (secret, not shown)")
        elif not value:
            lines.append(f"  {name}: (empty)")
        else:
            shown = ", ".join(value[:SHOWN_LINES])
            more = f" ... ({len(value)} lines)" if len(value) > SHOWN_LINES else ""
            lines.append(f"  {name}: {shown}{more}")
    return lines, problems


def _read_control(path: Path) -> tuple[list[str] | None, str | None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot open: {exc.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > MAX_CONTROL_FILE:
            return None, f"larger than {MAX_CONTROL_FILE} bytes"
        data = b""
        while len(data) <= MAX_CONTROL_FILE:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        return parse_lines(data, name=path.name), None
    except ControlError as exc:
        return None, str(exc)


def _owner_name(path: Path) -> str:
    try:
        uid = os.lstat(path).st_uid
    except FileNotFoundError:
        uid = os.geteuid()
    return IdMap.system().user_name(uid)


__all__ = ["check", "effective_configuration", "register", "run", "users"]
