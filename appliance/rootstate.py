"""Make a state directory usable by the daemons' users when root sets it up.

One job: what ``postern init`` (and ``postern run``) as root do before any daemon drops its
privileges — refuse a directory the daemons' users could not reach (``unreachable``), create
the system users, the files several daemons share (the web app's secret key, the embedded
broker's folders, ``run/trigger``) with the right owners, and apply the permission table
(``appliance/permissions.py``, which holds who owns what) to the rest (``secure``).

Called by appliance code running as root. Creates only what is missing; never follows
symlinks into place (``lexists`` checks, ``chown`` without following).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from appliance import permissions
from appliance import users as u
from appliance.users import IdMap
from mta.common import ipc
from mta.common.paths import StateDir


class UnreachableState(RuntimeError):
    """A parent directory keeps the daemons' users out of the state directory."""


def closed_ancestors(path: Path) -> list[Path]:
    """Parents of ``path`` that other users cannot traverse (no ``o+x``)."""
    out = []
    for parent in Path(path).absolute().parents:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                out.append(parent)
        except FileNotFoundError:
            continue
    return out


def unreachable(state: StateDir) -> str | None:
    """Why the daemons' users could not work in ``state`` after dropping root, or None.

    They must traverse every parent of the state directory, and read the Python installation
    and Postern itself: a daemon imports modules lazily long after it dropped root.
    """
    import sysconfig

    import mta

    paths = {"the state directory": state.root, "run/": state.run,
             "Python's standard library": Path(sysconfig.get_paths()["stdlib"]),
             "the installed packages": Path(sysconfig.get_paths()["purelib"]),
             "Postern's code": Path(mta.__file__).parent}
    for what, path in paths.items():
        closed = closed_ancestors(path)
        if closed:
            modes = ", ".join(f"{c} is mode {stat.S_IMODE(os.stat(c).st_mode):04o}"
                              for c in reversed(closed))
            return (f"{modes}, so the daemons' users could not reach {what} ({path}) after "
                    "dropping root; use paths whose parents everyone may traverse (o+x)")
    return None


def secure(state: StateDir) -> list[str]:
    """Run as root: create the users if missing, then give ``state`` the table's owners and
    modes. Refuses (``UnreachableState``) when the daemons' users could not reach the state
    directory or the Python installation: every daemon would fail after dropping root."""
    reason = unreachable(state)
    if reason is not None:
        raise UnreachableState(reason)
    done = [f"created {item}" for item in u.ensure_system_users()]
    done += make_secret_key(state)
    done += make_broker(state)
    done += permissions.apply(state, IdMap.system())
    done += make_trigger(state, IdMap.system())
    return done


# kombu's filesystem transport folders of the embedded settings (webui/settings/embedded.py).
BROKER_DIRS: Final = ("broker", "broker/messages", "broker/control", "broker/processed")


def make_broker(state: StateDir) -> list[str]:
    """Create the embedded broker's folders now, so that ``apply`` makes them group-writable
    for web and worker (kombu would create them with its umask, writable by one of them)."""
    done = []
    for name in BROKER_DIRS:
        path = state.root / name
        if state.root.is_dir() and not os.path.lexists(path):
            os.mkdir(path, 0o700)
            done.append(f"created {path}")
    return done


def make_secret_key(state: StateDir) -> list[str]:
    """Create the web app's secret key now, as root, so that ``apply`` gives it to web (group:
    the worker); made later by whichever of them starts first, the other could not read it."""
    path = state.root / "secret_key"
    if os.path.lexists(path) or not state.root.is_dir():
        return []
    try:
        from webui.settings.base import secret_key_from_state
    except ImportError:  # the web app is not installed: nobody needs a key
        return []
    secret_key_from_state(state)
    return [f"created {path}"]


def make_trigger(state: StateDir, ids: IdMap) -> list[str]:
    """Create run/trigger with the table's owner and mode if it is missing, so that queue
    (group postern) can poke send whichever of them starts first and whatever its umask."""
    rule = permissions.rule_for("run", (ipc.TRIGGER_FIFO,), permissions.Kind.FIFO)
    assert rule is not None
    if os.path.lexists(state.trigger) or not state.run.is_dir():
        return []
    os.mkfifo(state.trigger, 0o600)
    # mode first, while root still owns it; after the chown its new owner could swap it
    os.chmod(state.trigger, rule.mode)
    os.chown(state.trigger, ids.uid(rule.owners[0]), ids.gid(rule.group), follow_symlinks=False)
    return [f"created {state.trigger}"]
