"""Dovecot for IMAP and POP3: render its configuration from a Postern state directory.

NAME
    dovecot — the one place that knows how Postern's Maildirs, passwords, quota and TLS look
    to Dovecot.

DESCRIPTION
    ``render(settings)`` returns the text of a complete, self-contained ``dovecot.conf``
    (it includes nothing from /etc/dovecot); ``write_config(settings)`` writes it to
    ``<state root>/dovecot/dovecot.conf`` atomically and ``argv()`` gives
    ``dovecot -F -c <that file>``. ``postern run`` (appliance/commands/run.py) calls them at
    every start, and the installed unit postern-dovecot.service runs ``main()``
    (``python -m appliance.dovecot``) before each start, so the file always matches the
    command line and the state directory; nobody edits it.

    What Dovecot is told:

    * passdb ``passwd-file`` on ``control/passwd`` itself: the file the web app's publisher
      writes atomically (temp + rename) and smtpd's AUTH reads (contracts: "passwd"). Dovecot
      re-reads a passwd-file whenever its mtime changes, so a new, disabled (not listed) or
      re-passworded mailbox takes effect at the next login with no Dovecot restart. Two
      passdbs on it: the name as typed, then lower-cased (as smtpd compares) carrying the
      stored name on, so the session's name is the one the Maildir is called by.
    * userdb ``static``: every authenticated user's home and Maildir is
      ``mail/<domain>/<local>/`` (the layout mta/local/maildir.py delivers to), owned by
      ``postern-vmail`` when run as root.
    * quota: the ``quota`` plugin with the Maildir++ backend and *no* ``quota_rule``, so the
      limit is the one in the Maildir's ``maildirsize`` file, which local delivery writes
      from the ``mailboxes`` control file (``:quota=BYTES``): IMAP GETQUOTAROOT reports the
      same limit Postern enforces, and Dovecot keeps the usage lines current on expunge.
    * TLS with ``tls/cert.pem`` and ``tls/key.pem`` (STARTTLS on the plain ports, implicit
      TLS on the optional imaps/pop3s ports); plaintext logins only over TLS or loopback.
    * listeners from ``postern run --imap/--pop3/--imaps/--pop3s``.
    * ``base_dir`` (sockets, pid) in ``run/dovecot`` and ``state_dir`` in
      ``<state root>/dovecot/state``, so two appliances (or the system's own Dovecot) never
      share anything, and an ordinary user can run it: then every service runs as that user
      (no chroot, no ``mail_uid``).
    * As root: the master stays root (it binds 143/993/110/995 and starts each mail process
      as ``postern-vmail``), logins run as Debian's ``dovenull``, internal services as
      ``dovecot``, and the auth process as ``postern-smtpd`` (with the ``postern`` group)
      — the one user already allowed to read ``control/passwd`` (appliance/permissions.py),
      so no new reader of the hashes is created. Dovecot refuses to open mail as uid 0, so
      when the daemons keep root (local writes root's Maildirs) the caller leaves Dovecot off.

SECURITY
    Every value written into the file comes from the state directory's paths and from
    listener addresses already checked by ``appliance/commands/run.py``; anything with a
    character that could end a Dovecot value or start a new setting (newline, ``#``, ``{``,
    ``}``, ``"``, ``<``, ``$``, ``%``, backslash, space, control characters) is refused with
    ``DovecotConfigError`` before anything is written.

SEE ALSO
    docs/control.md "Dovecot (IMAP and POP3)", tests/interop/test_dovecot.py.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from appliance.users import GROUP_ALL
from mta.common.paths import StateDir
from mta.util.atomic import write_atomic

CONFIG_DIR: Final = "dovecot"         # under the state root
CONFIG_NAME: Final = "dovecot.conf"
BASE_DIR: Final = "dovecot"           # under run/
STATE_SUBDIR: Final = "state"         # under <state root>/dovecot
DOVECOT_BINARY: Final = "dovecot"
SEARCH_PATH: Final = "/usr/sbin:/usr/local/sbin:/sbin"
# Debian's dovecot-core creates these two users; logins and internal services run as them.
LOGIN_USER: Final = "dovenull"
INTERNAL_USER: Final = "dovecot"
# A UNIX socket path holds at most 107 bytes (sun_path, unix(7)); Dovecot 2.3's longest
# socket name under base_dir is "token-login/imap-urlauth" (24 bytes, plus the slash).
MAX_BASE_DIR: Final = 80
SHARED_GROUP: Final = GROUP_ALL  # may traverse control/ and read its files
_UNSAFE: Final = re.compile(r"[\x00-\x20\x7f\"#{}<>$%\\;]")


class DovecotConfigError(ValueError):
    """A value that cannot be written into dovecot.conf safely, or an impossible setting."""


@dataclass(frozen=True)
class Endpoint:
    """One listener: ``name`` is imap, imaps, pop3 or pop3s."""

    name: str
    host: str
    port: int

    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything ``render`` needs; ``from_state`` fills it from a state directory."""

    config_dir: Path
    base_dir: Path
    state_dir: Path
    passwd: Path
    mail: Path
    cert: Path | None
    key: Path | None
    listeners: tuple[Endpoint, ...]
    as_root: bool
    # Root only: who owns the Maildirs (local delivery's user: postern-vmail, or root when
    # the daemons keep root) and who reads control/passwd (smtpd's user, or root).
    mail_uid: int = 0
    mail_gid: int = 0
    auth_user: str = "root"
    auth_group: str | None = None
    login_user: str = LOGIN_USER
    internal_user: str = INTERNAL_USER
    # Not root: the invoking user, who then runs every service.
    own_user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)
    own_uid: int = field(default_factory=os.geteuid)
    own_gid: int = field(default_factory=os.getegid)

    @property
    def config_path(self) -> Path:
        return self.config_dir / CONFIG_NAME

    @classmethod
    def from_state(cls, state: StateDir, listeners: tuple[Endpoint, ...], *,
                   mail_user: str | None = None, auth_user: str | None = None) -> "Settings":
        """As root, ``mail_user``/``auth_user`` are the users local and smtpd drop to (None:
        they keep root, and so do Dovecot's mail and auth processes)."""
        cert, key = state.tls / "cert.pem", state.tls / "key.pem"
        have_tls = cert.is_file() and key.is_file()
        config_dir = state.root / CONFIG_DIR
        mail_uid = mail_gid = os.geteuid()
        if mail_user is not None:
            entry = pwd.getpwnam(mail_user)
            mail_uid, mail_gid = entry.pw_uid, entry.pw_gid
        return cls(config_dir=config_dir, base_dir=state.run / BASE_DIR,
                   state_dir=config_dir / STATE_SUBDIR, passwd=state.control_file("passwd"),
                   mail=state.mail, cert=cert if have_tls else None,
                   key=key if have_tls else None, listeners=listeners,
                   as_root=os.geteuid() == 0, mail_uid=mail_uid, mail_gid=mail_gid,
                   auth_user=auth_user or "root",
                   auth_group=_existing_group(SHARED_GROUP) if auth_user else None)


def find_dovecot() -> str | None:
    """The dovecot binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    path = os.environ.get("PATH", "")
    return shutil.which(DOVECOT_BINARY, path=f"{path}:{SEARCH_PATH}" if path else SEARCH_PATH)


def _value(text: str | Path, what: str) -> str:
    text = str(text)
    if not text or _UNSAFE.search(text):
        raise DovecotConfigError(f"{what} {text!r} cannot be written into dovecot.conf "
                                 "(empty, or a space, quote, #, {, }, <, >, $, %, ;, \\ "
                                 "or control character)")
    return text


def instance_name(config_dir: Path) -> str:
    """``postern-<8 hex>``: distinct per state directory in ps output and doveadm."""
    return "postern-" + hashlib.sha256(str(config_dir).encode()).hexdigest()[:8]


def render(s: Settings) -> str:
    """The whole dovecot.conf for ``s`` (pure; raises DovecotConfigError)."""
    if not s.listeners:
        raise DovecotConfigError("no IMAP or POP3 listener: nothing for Dovecot to serve")
    names = [e.name for e in s.listeners]
    if len(set(names)) != len(names) or not set(names) <= {"imap", "imaps", "pop3", "pop3s"}:
        raise DovecotConfigError(f"listeners {names}: each of imap imaps pop3 pop3s once")
    if len(str(s.base_dir)) > MAX_BASE_DIR:
        raise DovecotConfigError(
            f"run directory {s.base_dir} is too long for Dovecot's sockets "
            f"(at most {MAX_BASE_DIR} characters): use a shorter state directory path")
    protocols = [p for p in ("imap", "pop3")
                 if any(e.name in (p, p + "s") for e in s.listeners)]
    if any(e.name.endswith("s") for e in s.listeners) and s.cert is None:
        raise DovecotConfigError("imaps/pop3s need tls/cert.pem and tls/key.pem")
    mail = _value(s.mail, "mail directory")
    out: list[str] = [
        "# Written by Postern (appliance/dovecot.py) at every `postern run`; do not edit:",
        "# change the state directory or the run flags instead. Nothing from /etc/dovecot.",
        f"instance_name = {instance_name(s.config_dir)}",
        f"base_dir = {_value(s.base_dir, 'run directory')}",
        f"state_dir = {_value(s.state_dir, 'state directory')}",
        f"protocols = {' '.join(protocols)}",
        # Every listener names its own address below; this is only their default.
        "listen = " + ", ".join(dict.fromkeys(_value(e.host, "address") for e in s.listeners)),
        "shutdown_clients = yes",
        "log_path = /dev/stderr",
        "info_log_path = /dev/stderr",
        "log_timestamp =",  # the supervisor prefixes and the journal stamps lines
        "login_greeting = Postern IMAP/POP3 (Dovecot) ready.",
        "",
        "# Accounts: control/passwd, published atomically by the web app; Dovecot re-reads it",
        "# when its mtime changes. Disabled mailboxes are not in it.",
        "auth_mechanisms = plain login",
        "disable_plaintext_auth = yes",  # passwords only over TLS, or from loopback
        "auth_verbose = yes",
        # The name as typed; each passdb below picks its own lookup key. The file's keys keep
        # the case the admin gave the local part, and so does the Maildir's name.
        "auth_username_format = %u",
        "# 1. Found as typed: a local part stored with capitals (Ann.Lee@example.com) keeps",
        "#    them, and so does its Maildir's name.",
        "passdb {",
        "  driver = passwd-file",
        f"  args = username_format=%u {_value(s.passwd, 'passwd file')}",
        "}",
        "# 2. Else looked up lower-cased, as smtpd's AUTH does (mta/common/passwd.py",
        "#    username_key), so Bob@Example.COM finds bob@example.com; the session then carries",
        "#    the stored name, which names the Maildir. (Dovecot shares one passwd-file reader",
        "#    per path string, with the first one's username_format: the \"/./\" makes this a",
        "#    second reader of the same file. override_fields also applies when the lookup",
        "#    fails, so this passdb must come last.)",
        "passdb {",
        "  driver = passwd-file",
        f"  args = username_format=%Lu {_value(s.passwd.parent, 'control directory')}/./"
        f"{_value(s.passwd.name, 'passwd file')}",
        "  override_fields = user=%Lu",
        "}",
        "userdb {",
        "  driver = static",
    ]
    home = f"{mail}/%d/%n"
    if s.as_root:
        out.append(f"  args = uid={s.mail_uid} gid={s.mail_gid} home={home} allow_all_users=yes")
    else:
        out.append(f"  args = home={home} allow_all_users=yes")
    out += [
        "}",
        "",
        "# Maildirs as mta/local/maildir.py writes them: mail/<domain>/<local>/{tmp,new,cur}.",
        f"mail_location = maildir:{home}",
        "mail_home = " + home,
        "maildir_stat_dirs = yes",
        "mail_fsync = always",  # local delivery fsyncs too; flags and expunges survive a crash
        "namespace inbox {",
        "  inbox = yes",
        "  separator = /",
        "  mailbox Drafts {\n    special_use = \\Drafts\n    auto = subscribe\n  }",
        "  mailbox Sent {\n    special_use = \\Sent\n    auto = subscribe\n  }",
        "  mailbox Trash {\n    special_use = \\Trash\n    auto = subscribe\n  }",
        "  mailbox Junk {\n    special_use = \\Junk\n    auto = subscribe\n  }",
        "}",
        "",
        "# Quota: Maildir++ with no quota_rule, so the limit is the one local delivery wrote",
        "# into maildirsize from the mailboxes control file (:quota=BYTES).",
        "mail_plugins = $mail_plugins quota",
        "plugin {",
        "  quota = maildir:User quota",
        "}",
        "protocol imap {",
        "  mail_plugins = $mail_plugins imap_quota",
        "}",
        "protocol pop3 {",
        "  pop3_uidl_format = %08Xu%08Xv",
        "}",
        "",
    ]
    if s.cert is not None and s.key is not None:
        out += [
            "ssl = yes",
            f"ssl_cert = <{_value(s.cert, 'certificate')}",
            f"ssl_key = <{_value(s.key, 'key')}",
            "ssl_min_protocol = TLSv1.2",
            "ssl_prefer_server_ciphers = yes",
        ]
    else:
        out.append("ssl = no  # tls/cert.pem or tls/key.pem missing (postern init makes them)")
    out.append("")
    if s.as_root:
        # Mail processes run only as the Maildirs' owner. uid 0 is possible only in the
        # degraded mode where every Postern daemon keeps root (run.py warns about it).
        out += [
            f"default_login_user = {_value(s.login_user, 'user')}",
            f"default_internal_user = {_value(s.internal_user, 'user')}",
            f"mail_uid = {s.mail_uid}",
            f"mail_gid = {s.mail_gid}",
            f"first_valid_uid = {s.mail_uid}",
            f"last_valid_uid = {s.mail_uid}",
            f"first_valid_gid = {s.mail_gid}",
            f"last_valid_gid = {s.mail_gid}",
        ]
        # Dovecot sets only a service user's primary group; the auth process also needs the
        # shared group that may traverse control/ and read what the publisher wrote there.
        extra = f"  extra_groups = {_value(s.auth_group, 'group')}\n" if s.auth_group else ""
        out += [
            f"service auth {{\n  user = {_value(s.auth_user, 'user')}\n{extra}}}",
            f"service auth-worker {{\n  user = {_value(s.auth_user, 'user')}\n{extra}}}",
        ]
    else:
        me = _value(s.own_user, "user")
        out += [
            f"default_login_user = {me}",
            f"default_internal_user = {me}",
            f"default_internal_group = {_value(_group_name(s.own_gid), 'group')}",
            f"first_valid_uid = {s.own_uid}",
            f"last_valid_uid = {s.own_uid}",
            "service auth {\n  user = $default_internal_user\n}",
            "service auth-worker {\n  user = $default_internal_user\n}",
            "service anvil {\n  chroot =\n}",
        ]
    for proto in ("imap", "pop3"):
        if proto not in protocols:
            continue
        out.append(f"service {proto}-login {{")
        if not s.as_root:
            out.append("  chroot =")
        for name in (proto, proto + "s"):
            endpoint = next((e for e in s.listeners if e.name == name), None)
            out.append(f"  inet_listener {name} {{")
            if endpoint is None:
                out.append("    port = 0")
            else:
                out.append(f"    address = {_value(endpoint.host, 'address')}")
                out.append(f"    port = {int(endpoint.port)}")
                if name.endswith("s"):
                    out.append("    ssl = yes")
            out.append("  }")
        out.append("}")
    out += [
        # Nothing else listens on the network: no LMTP, no submission, no doveadm port.
        "service lmtp {\n  unix_listener lmtp {\n    mode = 0600\n  }\n}",
        "",
    ]
    return "\n".join(out)


def _existing_group(name: str) -> str | None:
    import grp

    try:
        grp.getgrnam(name)
        return name
    except KeyError:
        return None


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def write_config(s: Settings) -> Path:
    """Render and write ``dovecot.conf`` (atomically) and make ``state_dir``; returns its path.

    The directory is root's (or the invoking user's) and world-readable: Dovecot's
    unprivileged processes read the config through the config service, not the file.
    """
    text = render(s)
    s.config_dir.mkdir(mode=0o755, exist_ok=True)
    s.state_dir.mkdir(mode=0o750, exist_ok=True)
    os.chmod(s.config_dir, 0o755)  # as appliance/permissions.py has it, whatever the umask
    os.chmod(s.state_dir, 0o750)
    write_atomic(s.config_path, text.encode("utf-8"), mode=0o644)
    return s.config_path


def argv(binary: str, config: Path) -> tuple[str, ...]:
    """``dovecot -F -c <config>``: foreground, so the supervisor owns its life."""
    return (binary, "-F", "-c", str(config))


def main(argv: list[str] | None = None) -> int:
    """``python -m appliance.dovecot --state DIR [--imap ...]``: write the config, print its
    path. The installed unit (postern-dovecot.service) runs it before ``dovecot -F``;
    ``postern run`` calls the same code in-process (appliance/commands/run.py)."""
    import argparse
    import sys

    from appliance.commands import run as run_command
    from mta.common import ipc

    parser = argparse.ArgumentParser(prog="python -m appliance.dovecot",
                                     description="Write Postern's dovecot.conf.")
    parser.add_argument("--state", default=None, help="state directory, or 'fhs' (installed)")
    defaults = run_command.DEFAULTS_ROOT if os.geteuid() == 0 else run_command.DEFAULTS_USER
    for name in run_command.MAILBOX_ACCESS:
        parser.add_argument(f"--{name}", metavar="HOST:PORT|off", default=defaults[name])
    args = parser.parse_args(argv)
    try:
        wanted = [x for name in run_command.MAILBOX_ACCESS
                  if (x := run_command.parse_listener(name, getattr(args, name)))]
    except ValueError as exc:
        print(f"postern dovecot: {exc}", file=sys.stderr)
        return 64  # EX_USAGE
    state = StateDir.from_arg(args.state)
    mail_user = auth_user = None
    if os.geteuid() == 0:
        mail_user = run_command.system_user(ipc.Daemon.LOCAL)
        auth_user = run_command.system_user(ipc.Daemon.SMTPD)
        if mail_user is None:
            print("postern dovecot: the Maildirs belong to root (no postern-vmail user, or "
                  "the daemons keep root), and Dovecot never reads mail as root",
                  file=sys.stderr)
            return 78  # EX_CONFIG
    try:
        settings = Settings.from_state(
            state, tuple(Endpoint(x.name, x.host, x.port) for x in wanted),
            mail_user=mail_user, auth_user=auth_user)
        print(write_config(settings))
    except (DovecotConfigError, OSError, KeyError) as exc:
        print(f"postern dovecot: {exc}", file=sys.stderr)
        return 78
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
