"""``postern init``: create a state directory ready to run, never touching what already exists.

Run by admins, ``make run`` and the test harness, before ``postern run``. Creates the parts of
the state directory (DESIGN.md "The state directory") with their modes, the default control
files, the queue (``mta.common.queuedirs.create``), a self-signed TLS key and certificate, the
web app's database and an admin account. Idempotent: every step first looks whether its
result is already there and leaves it alone; a control file an admin edited (or deleted on
purpose and replaced by another) is never rewritten. Run it again after an upgrade: it only
adds what is missing and migrates the database.

Default control files follow qmail's ``config-fast``: ``me`` is this host's name, ``locals`` and
``rcpthosts`` hold ``me`` (so a fresh install accepts mail for itself and relays for nobody:
fail closed), ``defaultdomain`` is ``me`` without its first label. ``tcp.smtp`` lets the local
host relay (``127.`` and ``::1``, as qmail guides set it up) and everyone else connect.
docs/control.md lists them.

Run as root, it finally creates the daemons' system users if they are missing and gives the
state directory the owners and modes of the permission table (appliance/permissions.py).

Reads the environment (``POSTERN_ADMIN_PASSWORD``); writes only under the state directory
(and, as root, the system user database).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any, Final

from mta.common.control import ControlError, parse_single
from mta.common.paths import StateDir
from mta.util.atomic import write_atomic

log = logging.getLogger("postern.init")

ADMIN_USER: Final = "admin"
ADMIN_PASSWORD_ENV: Final = "POSTERN_ADMIN_PASSWORD"
GENERATED_PASSWORD_BYTES: Final = 15  # 20 characters of URL-safe base64
CERT_DAYS: Final = 3650  # a self-signed certificate is replaced by the admin, not renewed
RSA_BITS: Final = 2048   # what every SMTP peer (and Postfix's defaults) accepts

# Modes of the state directory's parts (PITFALLS.md: umask 077 for queue and mail).
DIR_MODES: Final[dict[str, int]] = {
    "root": 0o755, "control": 0o755, "queue": 0o700, "mail": 0o700, "run": 0o755,
    "log": 0o750, "tls": 0o700,
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init", help="create the state directory, control files, queue, TLS key and database",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--me", metavar="FQDN",
                        help="this host's name for control/me (default: the host's FQDN)")
    parser.add_argument("--split", type=int, default=None, metavar="N",
                        help="number of queue subdirectories (fixed at init; default 23)")
    parser.add_argument("--no-web", action="store_true",
                        help="skip the database and admin account")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="postern init: %(message)s")
    state = StateDir.from_arg(args.state)
    try:
        initialise(state, me=args.me, split=args.split, web=not args.no_web,
                   state_arg=str(args.state) if args.state else None)
    except InitError as exc:
        print(f"postern init: {exc}", file=sys.stderr)
        return 1
    return 0


class InitError(RuntimeError):
    """A step of ``init`` cannot be done; the message says which and why."""


def initialise(state: StateDir, *, me: str | None = None, split: int | None = None,
               web: bool = True, state_arg: str | None = None) -> None:
    """Every step, in order; each one leaves existing results alone."""
    make_directories(state)
    existing = existing_me(state)
    if existing and me and me.lower() != existing:
        log.warning("control/me already says %s; keeping it (edit the file to change it)",
                    existing)
    name = existing or me or host_name()
    check_host_name(name)
    write_default_controls(state, name)
    make_queue(state, split)
    make_tls(state, name)
    if web:
        make_database(state, state_arg or str(state.root))
    if os.geteuid() == 0:
        try:
            secure_as_root(state)
        except InitError as exc:
            # Usable for programs run as root (tests of one daemon); `postern run` as root
            # refuses it with the same reason.
            log.warning("%s (left owned by root)", exc)


def secure_as_root(state: StateDir) -> None:
    """As root: create the daemons' system users if missing and give the state directory the
    permission table's owners and modes (appliance/rootstate.py), so that every daemon can
    do its job, and only its job, after dropping root."""
    from appliance import rootstate
    try:
        for change in rootstate.secure(state):
            log.info("%s", change)
    except rootstate.UnreachableState as exc:
        raise InitError(str(exc)) from None


def existing_me(state: StateDir) -> str | None:
    """``control/me`` as the admin left it, so defaults added later agree with it."""
    try:
        value = parse_single(state.control_file("me").read_bytes(), name="me")
    except FileNotFoundError:
        return None
    except (OSError, ControlError) as exc:
        raise InitError(f"control/me: {exc}") from None
    return value.lower() if value else None


def host_name() -> str:
    """This host's fully qualified name, as qmail's config-fast expects it to be given."""
    fqdn = socket.getfqdn()
    if "." not in fqdn or fqdn.startswith("localhost"):
        fqdn = socket.gethostname()
    return fqdn.strip().rstrip(".").lower() or "localhost"


def check_host_name(name: str) -> None:
    labels = name.split(".")
    ok = 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-") and not label.endswith("-") for label in labels)
    if not ok:
        raise InitError(f"{name!r} is not a host name; give one with --me")


def make_directories(state: StateDir) -> None:
    for part, mode in DIR_MODES.items():
        path: Path = getattr(state, part)
        if path.is_symlink():
            raise InitError(f"{path} is a symbolic link; refusing to use it")
        if not path.exists():
            path.mkdir(mode=mode, parents=True)
            os.chmod(path, mode)  # mkdir's mode is filtered by the umask
            log.info("created %s/", path)
        elif not path.is_dir():
            raise InitError(f"{path} exists and is not a directory")


def default_controls(me: str) -> dict[str, str]:
    """The control files a fresh installation gets (qmail's config-fast, plus tcp.smtp)."""
    parts = me.split(".")
    domain = ".".join(parts[1:]) if len(parts) > 2 else me
    return {
        "me": f"{me}\n",
        "locals": f"{me}\n",
        "rcpthosts": f"{me}\n",
        "defaultdomain": f"{domain}\n",
        "tcp.smtp": ('# Written by postern init. Local programs may relay; everyone else may\n'
                     '# connect and deliver to the domains in rcpthosts.\n'
                     '127.:allow,RELAYCLIENT=""\n'
                     '::1:allow,RELAYCLIENT=""\n'
                     ':allow\n'),
    }


def write_default_controls(state: StateDir, me: str) -> None:
    for name, text in default_controls(me).items():
        path = state.control_file(name)
        if path.exists() or path.is_symlink():
            continue
        write_atomic(path, text.encode("utf-8"), mode=0o644)
        log.info("wrote control/%s", name)


def make_queue(state: StateDir, split: int | None) -> None:
    try:
        from mta.common import queuedirs
    except ImportError:
        log.warning("mta.common.queuedirs is not there yet: queue/ left empty")
        return
    try:
        if split is None:
            queuedirs.create(state.queue)
        else:
            queuedirs.create(state.queue, split)
    except ValueError as exc:
        raise InitError(f"queue: {exc}") from None


def make_tls(state: StateDir, me: str) -> None:
    """A self-signed RSA key and certificate for ``me`` (and localhost), unless one is there."""
    key_path, cert_path = state.tls / "key.pem", state.tls / "cert.pem"
    if key_path.exists() or cert_path.exists():
        if not (key_path.exists() and cert_path.exists()):
            log.warning("tls/ holds only one of key.pem and cert.pem; not touching it")
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, me)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(me)]
    if me != "localhost":
        names.append(x509.DNSName("localhost"))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomic(key_path, key_pem, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.info("wrote a self-signed certificate for %s in tls/", me)


def make_database(state: StateDir, state_arg: str) -> None:
    """Migrate the web app's database and create the admin account if there is none."""
    os.environ["POSTERN_STATE"] = state_arg
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings.embedded")
    try:
        from webui import bootstrap  # type: ignore[attr-defined]
    except ImportError as exc:
        log.warning("the web app's bootstrap is not there yet (%s): no database", exc)
        return
    bootstrap.prepare_database()
    supplied = os.environ.get(ADMIN_PASSWORD_ENV)
    password = supplied or secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    if bootstrap.ensure_admin(ADMIN_USER, password):
        if supplied:
            log.info("created the web admin account %r (password from $%s)",
                     ADMIN_USER, ADMIN_PASSWORD_ENV)
        else:
            # Printed once, on stdout, so `make run` shows it; never stored in clear.
            print(f"postern: web admin account: {ADMIN_USER}  password: {password}", flush=True)
