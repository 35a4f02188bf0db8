"""``postern run``: the whole appliance in the foreground, one process per daemon.

Run by admins, ``make run``, the test harness (tests/harness.py) and, on an installed system
without systemd units, an init script. Builds the list of daemons (DESIGN.md "Processes") and
hands it to ``appliance.supervisor.Supervisor``:

* ``python -m mta.queue|send|local|remote|clean --state DIR`` (ready when their socket in
  ``run/`` accepts a connection),
* ``python -m mta.smtpd --state DIR --smtp HOST:PORT --submission HOST:PORT`` (a listener set
  to ``off`` is not passed; both off means no smtpd),
* gunicorn ``webui.wsgi:application`` on ``--web``, a Celery worker and Celery beat
  (``-A webui.celery``), with ``DJANGO_SETTINGS_MODULE`` (default ``webui.settings.embedded``)
  and ``POSTERN_STATE`` set.

A daemon whose package is not installed (yet) is skipped with a logged line. Started as root,
it first creates the system users if missing and applies the permission table to the state
directory (as ``postern init`` does), then tells every daemon the user to drop to
(mta/common/ipc.py ``DAEMON_USERS``); as an ordinary user everything runs as that user.

Trusts its command line; ``HOST:PORT`` values are checked before anything starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from appliance.supervisor import DaemonSpec, Supervisor, TcpProbe, UnixProbe
from mta.common import ipc
from mta.common.paths import StateDir

DEFAULTS_USER: Final = {"smtp": "127.0.0.1:2525", "submission": "127.0.0.1:2587",
                        "web": "127.0.0.1:8000",
                        "imap": "127.0.0.1:2143", "pop3": "127.0.0.1:2110",
                        "imaps": "off", "pop3s": "off"}
DEFAULTS_ROOT: Final = {"smtp": "0.0.0.0:25", "submission": "0.0.0.0:587",
                        "web": "127.0.0.1:8000",
                        "imap": "0.0.0.0:143", "pop3": "0.0.0.0:110",
                        "imaps": "0.0.0.0:993", "pop3s": "0.0.0.0:995"}
# Served by Dovecot (appliance/dovecot.py) when it is installed.
MAILBOX_ACCESS: Final = ("imap", "imaps", "pop3", "pop3s")
LISTENERS: Final = ("smtp", "submission", "web", *MAILBOX_ACCESS)
WEB_WORKERS: Final = 2        # gunicorn worker processes (POSTERN_WEB_WORKERS overrides)
WEB_GRACEFUL: Final = 5       # seconds gunicorn gives requests on stop (< supervisor's grace)
CELERY_CONCURRENCY: Final = 2  # celery pool processes (POSTERN_CELERY_CONCURRENCY overrides)
EMBEDDED_SETTINGS: Final = "webui.settings.embedded"

# The MTA daemons in start order, with the socket under run/ that says each is ready.
MTA_DAEMONS: Final[tuple[tuple[ipc.Daemon, str | None], ...]] = (
    (ipc.Daemon.QUEUE, ipc.QUEUE_SOCKET),
    (ipc.Daemon.CLEAN, ipc.CLEAN_SOCKET),
    (ipc.Daemon.LOCAL, ipc.LOCAL_SOCKET),
    (ipc.Daemon.REMOTE, ipc.REMOTE_SOCKET),
    (ipc.Daemon.SEND, ipc.STATUS_SOCKET),
)


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int

    def argument(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="run the whole appliance in the foreground",
        description="Start every daemon under a supervisor; print 'postern: ready ...' once "
                    "every listener accepts connections; stop everything on SIGTERM/Ctrl-C.")
    root = os.geteuid() == 0
    defaults = DEFAULTS_ROOT if root else DEFAULTS_USER
    for name in LISTENERS:
        parser.add_argument(f"--{name}", metavar="HOST:PORT|off", default=defaults[name],
                            help=f"{name} listener (default {defaults[name]})"
                            + (", served by Dovecot if installed"
                               if name in MAILBOX_ACCESS else ""))
    parser.set_defaults(func=run)


def parse_listener(name: str, value: str) -> Listener | None:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``off``; raises ValueError with a reason."""
    if value == "off":
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"--{name} {value!r}: expected HOST:PORT or off")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"--{name} {value!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"--{name} {value!r}: HOST must be an IP address") from None
        host = "127.0.0.1"
    return Listener(name, host, port)


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def unreachable_code() -> list[Path]:
    """Parts of the Python installation the daemons' users could not read after dropping root.

    A daemon imports modules lazily after its privilege drop (and gunicorn/celery import the
    web app after theirs), so the interpreter, its standard library, the site-packages and
    Postern's own packages must be traversable by everyone (``o+x`` on every directory up to
    them). A Python under ``/root`` (pyenv) is not: privilege separation is then impossible.
    """
    places = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent,
              Path(__file__).resolve().parents[2]}
    for module in ("mta", "django", "celery", "gunicorn"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            places.add(Path(spec.origin).resolve().parent)
    bad: list[Path] = []
    for place in sorted(places):
        for path in [place, *place.parents]:
            try:
                if not os.stat(path).st_mode & stat.S_IXOTH:
                    if path not in bad:
                        bad.append(path)
            except OSError:
                continue
    return bad


_UNREACHABLE: list[Path] | None = None


def privilege_separation_blocked() -> list[Path]:
    global _UNREACHABLE
    if _UNREACHABLE is None:
        _UNREACHABLE = unreachable_code() if os.geteuid() == 0 else []
    return _UNREACHABLE


def system_user(daemon: ipc.Daemon) -> str | None:
    """The user ``daemon`` drops to when we run as root and that user exists, else None."""
    if os.geteuid() != 0 or privilege_separation_blocked():
        return None
    name = ipc.DAEMON_USERS[daemon]
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name


def build_specs(state: StateDir, state_arg: str, listeners: dict[str, Listener | None],
                *, log: Any = print) -> list[DaemonSpec]:
    """Every daemon that exists, with its argv, environment and readiness probes."""
    python = sys.executable
    env = {"POSTERN_STATE": state_arg,
           "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", EMBEDDED_SETTINGS)}
    specs: list[DaemonSpec] = []
    root_without_users: list[str] = []

    def user_args(daemon: ipc.Daemon) -> list[str]:
        user = system_user(daemon)
        if user is None and os.geteuid() == 0:
            root_without_users.append(daemon.value)
        return ["--user", user] if user else []

    for daemon, sock in MTA_DAEMONS:
        if not available(f"mta.{daemon.value}.__main__"):
            log(f"skipping {daemon.value}: mta.{daemon.value} has no __main__ yet")
            continue
        argv = [python, "-m", f"mta.{daemon.value}", "--state", state_arg, *user_args(daemon)]
        unix = (UnixProbe(state.run / sock),) if sock else ()
        specs.append(DaemonSpec(daemon.value, tuple(argv), env, unix, str(state.root)))

    smtp, submission = listeners.get("smtp"), listeners.get("submission")
    if smtp or submission:
        if available("mta.smtpd.__main__"):
            argv = [python, "-m", "mta.smtpd", "--state", state_arg]
            probes: list[TcpProbe] = []
            for listener in (smtp, submission):
                if listener:
                    argv += [f"--{listener.name}", listener.argument()]
                    probes.append(TcpProbe(listener.name, listener.host, listener.port))
            argv += user_args(ipc.Daemon.SMTPD)
            specs.append(DaemonSpec("smtpd", tuple(argv), env, tuple(probes), str(state.root)))
        else:
            log("skipping smtpd: mta.smtpd has no __main__ yet")

    web = listeners.get("web")
    if web:
        if available("webui.wsgi"):
            workers = os.environ.get("POSTERN_WEB_WORKERS", str(WEB_WORKERS))
            argv = [python, "-m", "gunicorn", "--bind", web.argument(), "--workers", workers,
                    "--graceful-timeout", str(WEB_GRACEFUL), "--access-logfile", "-"]
            user = system_user(ipc.Daemon.WEB)
            if user is None and os.geteuid() == 0:
                root_without_users.append("web")
            argv.append("webui.wsgi:application")
            specs.append(DaemonSpec("web", tuple(argv), env,
                                    (TcpProbe("web", web.host, web.port),), str(state.root),
                                    user=user))
        else:
            log("skipping web: webui.wsgi is not there yet")

    if available("webui.celery"):
        celery = [python, "-m", "celery", "-A", "webui.celery"]
        user = system_user(ipc.Daemon.WORKER)
        if user is None and os.geteuid() == 0:
            root_without_users.append("worker")
        concurrency = os.environ.get("POSTERN_CELERY_CONCURRENCY", str(CELERY_CONCURRENCY))
        specs.append(DaemonSpec("worker", tuple(celery + [
            "worker", "--loglevel", "INFO", "--concurrency", concurrency,
            # Named after the node as well as the host: two nodes that share a host name
            # (clones of one image) and a broker would otherwise collide on the worker's
            # exclusive control queue, and the second worker die at every start.
            "--hostname", f"postern-{os.environ.get('POSTERN_NODE', 'local')}"
                          f"@{os.uname().nodename}"]), env, (), str(state.root),
            user=user))
        specs.append(DaemonSpec("beat", tuple(celery + [
            "beat", "--loglevel", "INFO",
            "--schedule", str(state.run / "celerybeat-schedule")]),
            env, (), str(state.root), user=user))
    else:
        log("skipping worker and beat: webui.celery is not there yet")

    dovecot = dovecot_spec(state, listeners, log=log)
    if dovecot is not None:
        specs.append(dovecot)

    blocked = privilege_separation_blocked()
    if blocked:
        log(f"WARNING: running every daemon as root: {blocked[0]} is not traversable by "
            "other users, so the daemons could not load Python after dropping privileges. "
            "Install Postern (and its Python) where everyone may read it, e.g. /opt or /usr.")
    elif root_without_users:
        log("running as root but these daemons' system users do not exist, so they keep "
            f"the invoking user: {' '.join(root_without_users)} (postern install creates them)")
    return specs


def dovecot_spec(state: StateDir, listeners: dict[str, Listener | None],
                 *, log: Any = print) -> DaemonSpec | None:
    """``dovecot -F -c <state>/dovecot/dovecot.conf`` for the IMAP/POP3 listeners, or None
    (all off, Dovecot not installed, or no way to give it the Maildirs), saying why."""
    from appliance import dovecot

    wanted = [listener for name in MAILBOX_ACCESS if (listener := listeners.get(name))]
    if not wanted:
        return None
    binary = dovecot.find_dovecot()
    if binary is None:
        log("IMAP and POP3 are off: Dovecot is not installed "
            "(apt-get install dovecot-imapd dovecot-pop3d)")
        return None
    mail_user = auth_user = None
    if os.geteuid() == 0:
        mail_user = system_user(ipc.Daemon.LOCAL)
        auth_user = system_user(ipc.Daemon.SMTPD)
        if mail_user is None:
            # Dovecot never opens a mailbox as uid 0, and local keeps root here.
            log("IMAP and POP3 are off: the Maildirs belong to root because the daemons "
                "keep root, and Dovecot never reads mail as root")
            return None
    endpoints = tuple(dovecot.Endpoint(x.name, x.host, x.port) for x in wanted)
    settings = dovecot.Settings.from_state(state, endpoints, mail_user=mail_user,
                                           auth_user=auth_user)
    try:
        config = dovecot.write_config(settings)
    except (dovecot.DovecotConfigError, OSError) as exc:
        log(f"IMAP and POP3 are off: cannot write the Dovecot configuration: {exc}")
        return None
    probes = tuple(TcpProbe(x.name, x.host, x.port) for x in wanted)
    return DaemonSpec("dovecot", dovecot.argv(binary, config), {}, probes, str(state.root))


def run(args: argparse.Namespace) -> int:
    listeners: dict[str, Listener | None] = {}
    try:
        for name in LISTENERS:
            listeners[name] = parse_listener(name, getattr(args, name, "off"))
    except ValueError as exc:
        print(f"postern run: {exc}", file=sys.stderr)
        return 64
    state = StateDir.from_arg(args.state)
    if not state.control_file("me").exists():
        print(f"postern run: {state.root} is not initialised; run "
              f"'postern init --state {state.root}' first", file=sys.stderr)
        return 78  # EX_CONFIG
    state_arg = "fhs" if str(args.state or os.environ.get("POSTERN_STATE", "")) == "fhs" \
        else str(state.root)

    def log(text: str) -> None:
        print(f"postern: {text}", file=sys.stderr, flush=True)

    if os.geteuid() == 0 and not privilege_separation_blocked():
        # Daemons drop to their own users: make sure those exist and own their parts.
        from appliance.commands.init import InitError, secure_as_root
        try:
            secure_as_root(state)
        except InitError as exc:
            print(f"postern run: {exc}", file=sys.stderr)
            return 78
    specs = build_specs(state, state_arg, listeners, log=log)
    return Supervisor(specs).run()
