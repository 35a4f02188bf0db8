"""A private Postfix (Debian's package) on loopback, configured in a temporary directory.

Used by the interop tests (Postfix receives what ``remote`` sends, into a Maildir read with
``mailbox``) and by ``bench/relay.py`` (Postfix relays to smtp-sink beside Postern). Follows
shared/reference/postfix-comparison.md: loopback only, no DNS, defaults otherwise (fsync on).
Postfix's master must start as root; without root the callers skip (or fail in CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixInstance:
    """``with PostfixInstance(port, mailboxes=[...], transport={...}) as pf: ...``

    Args:
        port: where its smtpd listens (127.0.0.1).
        mailboxes: addresses delivered by Postfix's ``virtual`` agent into Maildirs under
            ``pf.mail / <address>/``.
        transport: ``transport_maps`` entries, e.g. ``{"sink.test": "smtp:[127.0.0.1]:2626"}``.
        extra: more main.cf lines.
    """

    def __init__(self, port: int, *, mailboxes: list[str] = (),  # type: ignore[assignment]
                 transport: dict[str, str] | None = None, extra: str = "") -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="postern-postfix-"))
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        self.mail = self.root / "mail"
        self.mailboxes = list(mailboxes)
        self.transport = transport or {}
        self.extra = extra
        self.log = self.root / "maillog"

    def maildir(self, address: str) -> Path:
        return self.mail / address

    def __enter__(self) -> "PostfixInstance":
        nobody = pwd.getpwnam("nobody")
        postfix = pwd.getpwnam("postfix")
        self.etc.mkdir()
        self.mail.mkdir()
        (self.root / "spool").mkdir(mode=0o755)
        (self.root / "data").mkdir(mode=0o700)
        os.chown(self.root / "data", postfix.pw_uid, postfix.pw_gid)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        domains = sorted({a.split("@", 1)[1] for a in self.mailboxes})
        (self.etc / "vmailbox").write_text("".join(f"{a} {a}/\n" for a in self.mailboxes))
        (self.etc / "transport").write_text("".join(f"{k} {v}\n"
                                                    for k, v in self.transport.items()))
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.root}/spool
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydomain = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
virtual_mailbox_domains = {" ".join(domains) or "$virtual_mailbox_maps"}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
transport_maps = texthash:{self.etc}/transport
smtp_dns_support_level = disabled
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
smtputf8_enable = yes
{self.extra}
"""
        (self.etc / "main.cf").write_text(main_cf)
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self._postfix("start")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Postfix did not start: " + self.read_log())
                time.sleep(0.05)
        return self

    def _postfix(self, *args: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {result.stderr}"
                               f"{result.stdout}{self.read_log()}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __exit__(self, *exc: object) -> None:
        try:
            self._postfix("stop")
        finally:
            # master exits asynchronously; give it a moment before removing its spool
            pid = self.root / "spool" / "pid" / "master.pid"
            deadline = time.monotonic() + 10
            while pid.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            shutil.rmtree(self.root, ignore_errors=True)
