"""System install and uninstall: users, FHS directories, systemd units, /usr/sbin/sendmail.

One job: put an installed Postern on a machine, or into an image tree (``root``, like
DESTDIR), and take it off again. Run by ``postern install``/``postern uninstall`` as root
(into a tree, any user may run it; owners are then set by ``systemd-sysusers --root`` when
available, else at the image's first boot by the tmpfiles.d file written here).

Idempotent: a second run changes nothing and says so. It refuses, before changing anything,
to replace a /usr/sbin/sendmail that is not Postern's unless ``force`` is given (the old one
is then kept beside it and put back by uninstall). Trusts the machine's account database
and the tree it is pointed at; creates nothing through a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

from appliance import permissions, users
from appliance.users import IdMap
from mta.common.paths import StateDir

UNITS_PACKAGE: Final = "appliance.units"
UNIT_DIR: Final = "etc/systemd/system"           # admin-installed units (not a distro package)
TARGET: Final = "postern.target"
TARGET_WANTED_BY: Final = "multi-user.target.wants"
SYSUSERS_FILE: Final = "usr/lib/sysusers.d/postern.conf"
TMPFILES_FILE: Final = "usr/lib/tmpfiles.d/postern.conf"
SENDMAIL_LINKS: Final = ("usr/sbin/sendmail", "usr/lib/sendmail")
SAVED_SUFFIX: Final = ".postern-saved"
FILE_MODE: Final = 0o644


class InstallError(Exception):
    """Install refused; nothing was changed. ``str()`` says why and what to do."""


@dataclass
class Report:
    """What a run did; ``changed`` is empty when everything was already in place."""

    changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def did(self, text: str) -> None:
        self.changed.append(text)


def unit_names() -> list[str]:
    """Every unit file shipped in appliance/units/, target last."""
    names = sorted(p.name for p in resources.files(UNITS_PACKAGE).iterdir()
                   if p.name.endswith(".service"))
    return [*names, TARGET]


def render_unit(name: str, *, python: str, docs: str = "/usr/share/doc/postern") -> str:
    """A unit file with its @PLACEHOLDERS@ filled in for the installed (FHS) layout."""
    text = resources.files(UNITS_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    fhs = StateDir.fhs("/")
    values = {"@PYTHON@": python, "@STATE@": "fhs", "@CONTROL@": str(fhs.control),
              "@TLS@": str(fhs.tls), "@QUEUE@": str(fhs.queue), "@MAIL@": str(fhs.mail),
              "@RUN@": str(fhs.run), "@LOG@": str(fhs.log), "@LIB@": str(fhs.root),
              "@DOCS@": docs, "@ETC@": str(fhs.control.parent)}
    for key, value in values.items():
        text = text.replace(key, value)
    leftover = re.search(r"@[A-Z]+@", text)
    if leftover:
        raise ValueError(f"{name}: unknown placeholder {leftover.group()}")
    return text


def render_tmpfiles() -> str:
    lines = ["# Postern's directories (written by `postern install`); see docs/internals.md.",
             *permissions.tmpfiles_lines(StateDir.fhs("/"))]
    return "\n".join(lines) + "\n"


def default_python() -> str:
    return sys.executable


def our_sendmail(python: str) -> str:
    """Postern's sendmail(1): the ``sendmail`` script installed beside the interpreter."""
    return str(Path(python).parent / "sendmail")


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _write_if_changed(path: Path, text: str, report: Report, mode: int = FILE_MODE) -> None:
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data and (os.stat(path).st_mode & 0o7777) == mode:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.postern-tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    report.did(f"wrote {path}")


def _symlink_if_changed(path: Path, target: str, report: Report) -> None:
    if path.is_symlink() and os.readlink(path) == target:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    os.symlink(target, path)
    report.did(f"linked {path} -> {target}")


# --- sendmail ---------------------------------------------------------------------------

def describe_other_mta(path: Path, *, root: Path, in_tree: bool) -> str | None:
    """None if ``path`` is absent, dangling (no MTA at all) or already Postern's; else what
    is there, in words."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        target = os.readlink(path)
        if _is_ours(target, root) or not _exists_in(target, path, root):
            return None
        what = f"a symlink to {target}"
    elif path.is_file():
        what = "a program"
    else:
        what = "something that is not a program"
    owner = None if in_tree else _dpkg_owner(path)
    return f"{path} is {what}" + (f" from the Debian package {owner}" if owner else "")


def _exists_in(target: str, link: Path, root: Path) -> bool:
    """Whether a link's target exists, read as a path of the system under ``root``."""
    if os.path.isabs(target):
        return os.path.lexists(_under(root, target))
    return os.path.lexists(link.parent / target)


def _is_ours(target: str, root: Path) -> bool:
    """A sendmail we installed: a ``sendmail`` script with a ``postern`` script beside it
    (looked up in the system under ``root``: in an image tree the link names image paths)."""
    if Path(target).name != "sendmail" or not os.path.isabs(target):
        return False
    sibling = str(Path(target).with_name("postern"))
    return os.path.exists(_under(root, sibling)) or os.path.exists(sibling)


def _dpkg_owner(path: Path) -> str | None:
    tool = shutil.which("dpkg-query")
    if tool is None:
        return None
    result = subprocess.run([tool, "--search", str(path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0 or ":" not in result.stdout:
        return None
    return result.stdout.split(":", 1)[0].strip() or None


def _point_sendmail(root: Path, ours: str, force: bool, in_tree: bool,
                    report: Report) -> None:
    for link in SENDMAIL_LINKS:
        path = _under(root, link)
        other = describe_other_mta(path, root=root, in_tree=in_tree)
        if other is not None:
            if not force:  # checked before anything else changed; see check_sendmail
                raise InstallError(f"{other}; refusing to replace it (use --force)")
            saved = path.with_name(path.name + SAVED_SUFFIX)
            if not os.path.lexists(saved):
                os.rename(path, saved)
                report.did(f"kept the old {path} as {saved}")
            else:
                path.unlink()
        _symlink_if_changed(path, ours, report)


def check_sendmail(root: Path, force: bool, in_tree: bool) -> list[str]:
    """What another MTA has at the sendmail paths (empty: free, or ours, or forced)."""
    found = []
    for link in SENDMAIL_LINKS:
        other = describe_other_mta(_under(root, link), root=root, in_tree=in_tree)
        if other is not None:
            found.append(other)
    return [] if force else found


# --- install ----------------------------------------------------------------------------

def install(root: Path | None = None, *, python: str | None = None, force: bool = False,
            sendmail: str | None = None) -> Report:
    """Install Postern on this machine (``root`` None) or into the tree at ``root``."""
    report = Report()
    in_tree = root is not None
    top = Path(root) if root is not None else Path("/")
    python = python or default_python()
    ours = sendmail or our_sendmail(python)
    if not in_tree and os.geteuid() != 0:
        raise InstallError("postern install needs root (or --root DIR to build an image tree)")
    others = check_sendmail(top, force, in_tree)
    if others:
        raise InstallError("; ".join(others) + ". Another MTA provides sendmail: refusing to "
                           "replace it. Remove that MTA, or pass --force to replace it (the "
                           f"old one is kept as <name>{SAVED_SUFFIX} and restored by "
                           "`postern uninstall`).")

    # 1. users and groups
    sysusers = _under(top, SYSUSERS_FILE)
    _write_if_changed(sysusers, users.render_sysusers(), report)
    ids: IdMap | None
    if in_tree:
        before = IdMap.tree(top).missing()
        if before and os.geteuid() == 0 and users.apply_sysusers_to_tree(top, sysusers):
            report.did(f"created users in {top}/etc/passwd with systemd-sysusers")
        ids = IdMap.tree(top)
        if ids.missing():
            report.notes.append("users will be created on first boot (sysusers.d); owners "
                                "are set then by tmpfiles.d")
            ids = None
    else:
        for item in users.ensure_system_users():
            report.did(f"created {item}")
        ids = IdMap.system()

    # 2. directories
    state = StateDir.fhs(top)
    if ids is not None and os.geteuid() == 0:
        report.changed += permissions.apply(state, ids)
    else:
        report.changed += _make_dirs_modes_only(state)
    _write_if_changed(_under(top, TMPFILES_FILE), render_tmpfiles(), report)

    # 3. systemd units
    unit_dir = _under(top, UNIT_DIR)
    for name in unit_names():
        _write_if_changed(unit_dir / name, render_unit(name, python=python), report)
    _symlink_if_changed(unit_dir / TARGET_WANTED_BY / TARGET, f"../{TARGET}", report)
    if not in_tree and report.changed and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)

    # 4. sendmail
    _point_sendmail(top, ours, force, in_tree, report)
    return report


def _make_dirs_modes_only(state: StateDir) -> list[str]:
    changed = []
    parts = permissions.part_paths(state)
    for name in permissions.PARTS:
        path = parts.get(name)
        if path is None:
            continue
        mode = permissions.directory_rule(name).mode
        if not path.exists():
            path.mkdir(parents=True)
            changed.append(f"created {path}")
        if (os.stat(path).st_mode & 0o7777) != mode:
            os.chmod(path, mode)
            changed.append(f"chmod {mode:04o} {path}")
    return changed


# --- uninstall --------------------------------------------------------------------------

def uninstall(root: Path | None = None, *, purge: bool = False) -> Report:
    """Remove units, links and runtime files; mail, queue and configuration stay unless
    ``purge`` (which also deletes the users on this machine)."""
    report = Report()
    in_tree = root is not None
    top = Path(root) if root is not None else Path("/")
    if not in_tree and os.geteuid() != 0:
        raise InstallError("postern uninstall needs root (or --root DIR)")
    unit_dir = _under(top, UNIT_DIR)
    systemd_running = not in_tree and Path("/run/systemd/system").is_dir()
    if systemd_running and (unit_dir / TARGET).exists():
        subprocess.run(["systemctl", "disable", "--now", TARGET, *unit_names()[:-1]],
                       check=False, capture_output=True)
        report.did("stopped and disabled the units")
    for path in [unit_dir / TARGET_WANTED_BY / TARGET, *(unit_dir / n for n in unit_names()),
                 _under(top, TMPFILES_FILE)]:
        if os.path.lexists(path):
            path.unlink()
            report.did(f"removed {path}")
    for link in SENDMAIL_LINKS:
        path = _under(top, link)
        saved = path.with_name(path.name + SAVED_SUFFIX)
        if path.is_symlink() and (_is_ours(os.readlink(path), top)
                                  or not _exists_in(os.readlink(path), path, top)):
            path.unlink()
            report.did(f"removed {path}")
        if os.path.lexists(saved) and not os.path.lexists(path):
            os.rename(saved, path)
            report.did(f"restored {path}")
    state = StateDir.fhs(top)
    parts = permissions.part_paths(state)
    if os.path.isdir(parts["run"]):
        shutil.rmtree(parts["run"])
        report.did(f"removed {parts['run']}")
    if purge:
        for name in ("control", "tls", "queue", "mail", "log", "root", "parent"):
            part = parts.get(name)
            if part is not None and os.path.lexists(part):
                shutil.rmtree(part)
                report.did(f"removed {part}")
        sysusers = _under(top, SYSUSERS_FILE)
        if sysusers.exists():
            sysusers.unlink()
            report.did(f"removed {sysusers}")
        if not in_tree:
            report.changed += [f"deleted {x}" for x in users.remove_system_users()]
    else:
        kept = [str(parts[n]) for n in ("control", "queue", "mail", "log") if parts[n].exists()]
        if kept:
            report.notes.append("kept (use --purge to delete): " + ", ".join(kept))
    if systemd_running and report.changed:
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    return report
