"""Interop with Debian's Dovecot (dovecot-imapd, dovecot-pop3d) configured by Postern.

The whole appliance runs (tests/harness.py: ``postern init`` + ``postern run --imap --pop3``),
mail arrives over SMTP through smtpd, queue, send and local into the real Maildir, and is
read back with Python's ``imaplib`` and ``poplib`` from the Dovecot that ``postern run``
started with the configuration appliance/dovecot.py rendered. Mailboxes are managed with
``postern domain|mailbox`` (the web app's forms and publisher, so control/passwd and
control/mailboxes are exactly what the web app would write).

Run as root (CI), the daemons drop to their users and Dovecot's mail processes run as
postern-vmail; the state directory is then under /var/tmp so those users can reach it. An
interpreter they cannot read (a pyenv under /root) makes that impossible: the test is
skipped then (a failure under POSTERN_REQUIRE_ALL=1; .ci/run builds its venv on
/usr/bin/python3).
"""

from __future__ import annotations

import imaplib
import mailbox
import os
import poplib
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import pytest

from appliance import dovecot
from mta.common.paths import StateDir
from tests import support
from tests.harness import Appliance, running_appliance

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DOMAIN = "dove.example"
POSTERN = [sys.executable, "-m", "appliance.cli"]
DELIVERY_WAIT = 60.0  # seconds for SMTP -> Maildir on a loaded 2-core machine


# --- the rendered configuration, checked by Dovecot's own parser -----------------------------

@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """pytest's tmp_path can be longer than a socket path allows under run/dovecot."""
    path = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def settings(tmp_path: Path, *, as_root: bool) -> dovecot.Settings:
    state = StateDir.single(tmp_path / "var")
    state.tls.mkdir(parents=True)
    (state.tls / "cert.pem").write_text("x")
    (state.tls / "key.pem").write_text("x")
    s = dovecot.Settings.from_state(state, (dovecot.Endpoint("imap", "127.0.0.1", 2143),
                                            dovecot.Endpoint("pop3s", "::1", 2995)))
    return dovecot.Settings(**{**s.__dict__, "as_root": as_root, "mail_uid": 4321,
                               "mail_gid": 4321, "auth_user": "postern-smtpd"})


@pytest.mark.parametrize("as_root", [True, False])
def test_doveconf_accepts_rendered_config(short_tmp: Path, as_root: bool) -> None:
    doveconf = support.require("doveconf", path="/usr/bin/doveconf")
    s = settings(short_tmp, as_root=as_root)
    path = dovecot.write_config(s)
    done = subprocess.run([doveconf, "-c", str(path), "-n"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    conf = done.stdout
    assert f"args = username_format=%u {s.passwd}" in conf
    assert f"args = username_format=%Lu {s.passwd.parent}/./passwd" in conf
    assert f"mail_location = maildir:{s.mail}/%d/%n" in conf
    assert "quota = maildir:User quota" in conf and "quota_rule" not in conf
    assert f"base_dir = {s.base_dir}" in conf
    assert "address = 127.0.0.1\n    port = 2143" in conf
    assert "address = ::1\n    port = 2995\n    ssl = yes" in conf
    assert "protocols = imap pop3" in conf
    # pop3 (plain) and imaps are not asked for: their listeners are off.
    assert re.search(r"inet_listener pop3 \{\n\s+port = 0", conf)
    assert re.search(r"inet_listener imaps \{\n\s+port = 0", conf)
    if as_root:
        assert "mail_uid = 4321" in conf and "user = postern-smtpd" in conf
    else:
        assert "mail_uid" not in conf and "chroot = \n" in conf


@pytest.mark.parametrize("bad", ["/tmp/a b", "/tmp/x\nssl = no", "/tmp/{x}", "/tmp/$x",
                                 "/tmp/a#b", "/tmp/<x"])
def test_unsafe_path_refused(short_tmp: Path, bad: str) -> None:
    s = settings(short_tmp, as_root=False)
    with pytest.raises(dovecot.DovecotConfigError):
        dovecot.render(dovecot.Settings(**{**s.__dict__, "mail": Path(bad)}))
    assert not s.config_path.exists()


def test_refuses_nothing_to_serve_and_long_run_dir(short_tmp: Path) -> None:
    s = settings(short_tmp, as_root=False)
    with pytest.raises(dovecot.DovecotConfigError, match="nothing"):
        dovecot.render(dovecot.Settings(**{**s.__dict__, "listeners": ()}))
    long = Path("/" + "d" * (dovecot.MAX_BASE_DIR + 1))
    with pytest.raises(dovecot.DovecotConfigError, match="too long"):
        dovecot.render(dovecot.Settings(**{**s.__dict__, "base_dir": long}))
    no_tls = dovecot.Settings(**{**s.__dict__, "cert": None, "key": None})
    with pytest.raises(dovecot.DovecotConfigError, match="imaps/pop3s"):
        dovecot.render(no_tls)


# --- the whole appliance ----------------------------------------------------------------------

# seconds for a published account change to reach Dovecot: its passwd-file check runs at
# most once per second
PASSWD_WINDOW = 5.0
T = TypeVar("T")


def accepted_soon(login: Callable[[], T], error: type[BaseException]) -> T:
    """``login`` for an account published a moment ago: a refusal is retried until
    PASSWD_WINDOW has passed (a login in the same second as an earlier one sees Dovecot's
    previous copy of the passwd-file), then raised."""
    deadline = time.monotonic() + PASSWD_WINDOW
    while True:
        try:
            return login()
        except error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def refused_soon(login: Callable[[], object], error: type[BaseException]) -> None:
    """``login`` must fail with ``error`` within PASSWD_WINDOW; a success is closed and retried."""
    deadline = time.monotonic() + PASSWD_WINDOW
    while True:
        try:
            session = login()
        except error:
            return
        for close in ("logout", "quit"):
            if hasattr(session, close):
                getattr(session, close)()
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"still logged in {PASSWD_WINDOW}s after the change was published")
        time.sleep(0.2)


@dataclass
class Mail:
    app: Appliance
    env: dict[str, str]

    def postern(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*POSTERN, "--state", str(self.app.state.root), *args],
                              input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=120)
        assert done.returncode == 0, f"postern {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def maildir(self, local: str) -> Path:
        return self.app.state.mail / DOMAIN / local

    def imap(self, user: str, password: str, *, new: bool = False) -> imaplib.IMAP4:
        """Log in; ``new``: the account was just published, so retry a refusal for up to
        PASSWD_WINDOW (Dovecot re-reads its passwd-file at most once a second)."""
        def login() -> imaplib.IMAP4:
            host, port = self.app.listeners["imap"]
            client = imaplib.IMAP4(host, port, timeout=30)
            client.login(user, password)
            return client
        return accepted_soon(login, imaplib.IMAP4.error) if new else login()

    def pop3(self, user: str, password: str, *, new: bool = False) -> poplib.POP3:
        def login() -> poplib.POP3:
            host, port = self.app.listeners["pop3"]
            client = poplib.POP3(host, port, timeout=30)
            client.user(user)
            client.pass_(password)
            return client
        return accepted_soon(login, poplib.error_proto) if new else login()

    def send(self, to: str, subject: str, *, via: str = "smtp", login: tuple[str, str] | None
             = None, sender: str = "someone@elsewhere.example") -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, to, subject
        msg.set_content(f"body of {subject}\n")
        with smtplib.SMTP(*self.app.listeners[via], timeout=30) as smtp:
            if login:
                smtp.login(*login)
            smtp.send_message(msg, from_addr=sender, to_addrs=[to])

    def wait_delivered(self, local: str, subject: str) -> None:
        def there() -> bool:
            try:
                box = mailbox.Maildir(self.maildir(local), create=False)
                return any(m["Subject"] == subject for m in box)
            except (mailbox.NoSuchMailboxError, FileNotFoundError):
                return False  # the first delivery makes the Maildir
        support.wait_for(there, timeout=DELIVERY_WAIT, interval=0.1,
                         what=f"{subject!r} in {local}'s Maildir")


def _base() -> tuple[Path, bool]:
    if os.geteuid() != 0:
        return Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp")), True
    from appliance import rootstate
    base = Path(tempfile.mkdtemp(prefix="pd-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    why = rootstate.unreachable(StateDir.single(base / "var"))
    if why is not None:
        shutil.rmtree(base)
        msg = f"Dovecot never reads mail as root, and the daemons could not drop it: {why}"
        if support.REQUIRE_ALL:
            pytest.fail(msg)
        pytest.skip(msg)
    return base, True


@pytest.fixture(scope="module")
def mail() -> Iterator[Mail]:
    support.require("dovecot", path="/usr/sbin/dovecot")
    # A short base path: Dovecot's sockets live in run/dovecot (sun_path is 108 bytes).
    base, _ = _base()
    try:
        with running_appliance(base, imap=True, pop3=True, web=False) as app:
            env = {**os.environ, "POSTERN_STATE": str(app.state.root)}
            m = Mail(app, env)
            m.postern("domain", "add", DOMAIN)
            yield m
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_ready_line_names_imap_and_pop3(mail: Mail) -> None:
    assert re.search(r" imap=127\.0\.0\.1:\d+ pop3=127\.0\.0\.1:\d+", mail.app.ready_line)
    conf = (mail.app.state.root / "dovecot" / "dovecot.conf").read_text()
    assert f"username_format=%u {mail.app.state.control / 'passwd'}" in conf


def test_imap_reads_what_smtp_delivered_and_flags_and_deletion_survive(mail: Mail) -> None:
    mail.postern("mailbox", "add", f"alice@{DOMAIN}", "--password-stdin", stdin="alice-pw-1\n")
    user = f"alice@{DOMAIN}"
    for n in (1, 2, 3):
        mail.send(user, f"imap test {n}")
    for n in (1, 2, 3):
        mail.wait_delivered("alice", f"imap test {n}")

    c = mail.imap(user, "alice-pw-1", new=True)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == 3
    typ, found = c.search(None, "SUBJECT", '"imap test 2"')
    (num,) = found[0].split()
    typ, body = c.fetch(num, "(BODY[])")
    assert b"body of imap test 2" in body[0][1]
    assert b"Delivered-To: alice@dove.example" in body[0][1]
    c.store(num, "+FLAGS", "(\\Flagged)")
    typ, found = c.search(None, "SUBJECT", '"imap test 3"')
    c.store(found[0].split()[0], "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()

    # A new session (a new imap process) sees the same state ...
    c = mail.imap(user, "alice-pw-1")
    c.select("INBOX", readonly=True)
    typ, flagged = c.search(None, "FLAGGED")
    typ, all_ = c.search(None, "ALL")
    assert len(all_[0].split()) == 2 and len(flagged[0].split()) == 1
    typ, subj = c.fetch(flagged[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"imap test 2" in subj[0][1]
    c.logout()
    # ... and so does the Maildir on disk: F in the info of message 2, message 3 gone.
    box = mailbox.Maildir(mail.maildir("alice"), create=False)
    by_subject = {m["Subject"]: m for m in box}
    assert set(by_subject) == {"imap test 1", "imap test 2"}
    assert "F" in by_subject["imap test 2"].get_flags()


def test_flags_and_deletions_survive_a_dovecot_restart(mail: Mail) -> None:
    import signal

    user = f"rita@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="rita-password\n")
    for n in (1, 2):
        mail.send(user, f"restart {n}")
        mail.wait_delivered("rita", f"restart {n}")
    c = mail.imap(user, "rita-password", new=True)
    c.select("INBOX")
    typ, found = c.search(None, "SUBJECT", '"restart 1"')
    c.store(found[0].split()[0], "+FLAGS", "(\\Answered \\Seen)")
    typ, found = c.search(None, "SUBJECT", '"restart 2"')
    c.store(found[0].split()[0], "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()

    pid = mail.app.daemon_pid("dovecot")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # the supervisor starts it again
    support.wait_for(lambda: mail.app.daemon_pid("dovecot") not in (None, pid), timeout=30,
                     interval=0.1, what="the supervisor restarting dovecot")

    def reads() -> imaplib.IMAP4 | None:
        try:
            return mail.imap(user, "rita-password")
        except (OSError, imaplib.IMAP4.error):
            return None
    c = support.wait_for(reads, timeout=30, interval=0.2, what="IMAP after the restart")
    assert isinstance(c, imaplib.IMAP4)
    c.select("INBOX", readonly=True)
    typ, all_ = c.search(None, "ALL")
    typ, answered = c.search(None, "ANSWERED SEEN")
    assert len(all_[0].split()) == 1 and answered[0].split() == all_[0].split()
    c.logout()


def test_pop3_reads_and_deletes(mail: Mail) -> None:
    user = f"pat@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="pat-password\n")
    mail.send(user, "pop one")
    mail.send(user, "pop two")
    mail.wait_delivered("pat", "pop one")
    mail.wait_delivered("pat", "pop two")
    p = mail.pop3(user, "pat-password", new=True)
    count, _ = p.stat()
    assert count == 2
    subjects = {}
    for n in (1, 2):
        _, lines, _ = p.retr(n)
        text = b"\n".join(lines)
        subjects[n] = re.search(rb"^Subject: (.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    doomed = next(n for n, s in subjects.items() if s == b"pop one")
    p.dele(doomed)
    p.quit()
    p = mail.pop3(user, "pat-password")
    assert p.stat()[0] == 1
    _, lines, _ = p.retr(1)
    assert b"Subject: pop two" in lines
    p.quit()
    assert [m["Subject"] for m in mailbox.Maildir(mail.maildir("pat"), create=False)] \
        == ["pop two"]


def test_password_change_applies_to_imap_pop3_and_smtp_auth(mail: Mail) -> None:
    user = f"carol@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="old-secret\n")
    mail.imap(user, "old-secret", new=True).logout()
    mail.pop3(user, "old-secret", new=True).quit()
    # The same account sends through submission (AUTH) with the password it reads mail with.
    mail.send(user, "sent with the old password", via="submission", login=(user, "old-secret"),
              sender=user)
    mail.wait_delivered("carol", "sent with the old password")

    starts = mail.app.log().count("started dovecot")
    mail.postern("mailbox", "passwd", user, "--password-stdin", stdin="new-secret\n")
    # No Dovecot restart: the old password stops working everywhere (Dovecot re-reads the
    # passwd-file at most once a second, hence "soon" rather than "at once").
    refused_soon(lambda: mail.imap(user, "old-secret"), imaplib.IMAP4.error)
    refused_soon(lambda: mail.pop3(user, "old-secret"), poplib.error_proto)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        mail.send(user, "must not go", via="submission", login=(user, "old-secret"),
                  sender=user)
    c = mail.imap(user, "new-secret", new=True)
    c.select("INBOX", readonly=True)
    c.logout()
    mail.pop3(user, "new-secret", new=True).quit()
    mail.send(user, "sent with the new password", via="submission", login=(user, "new-secret"),
              sender=user)
    mail.wait_delivered("carol", "sent with the new password")
    assert mail.app.log().count("started dovecot") == starts  # never restarted


def test_disabled_mailbox_can_neither_log_in_nor_receive(mail: Mail) -> None:
    user = f"dave@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="dave-password\n")
    mail.imap(user, "dave-password", new=True).logout()
    mail.send(user, "before disabling")
    mail.wait_delivered("dave", "before disabling")

    disable = (
        "import argparse, sys\n"
        "from appliance.commands import _webui as w\n"
        "w.setup(argparse.Namespace(state=sys.argv[1]))\n"
        "from webui.mailboxes.models import Mailbox\n"
        "n = Mailbox.objects.filter(local_part='dave').update(enabled=False)\n"
        "assert n == 1\n"
        "w.publish()\n")
    done = subprocess.run([sys.executable, "-c", disable, str(mail.app.state.root)],
                          capture_output=True, text=True, env=mail.env, timeout=120)
    assert done.returncode == 0, done.stderr

    refused_soon(lambda: mail.imap(user, "dave-password"), imaplib.IMAP4.error)
    refused_soon(lambda: mail.pop3(user, "dave-password"), poplib.error_proto)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        mail.send(user, "after disabling")
    assert refused.value.recipients[user][0] == 550
    assert [m["Subject"] for m in mailbox.Maildir(mail.maildir("dave"), create=False)] \
        == ["before disabling"]


def test_quota_reported_is_the_quota_enforced(mail: Mail) -> None:
    user = f"quincy@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--quota", "1M", "--password-stdin",
                 stdin="quincy-password\n")
    mail.send(user, "quota one")
    mail.wait_delivered("quincy", "quota one")

    def counted() -> list[str] | None:
        # local counts a delivery in maildirsize after its name is durable in new/ (as
        # Maildir++ deliverers do): the message can be seen a moment before it is counted.
        try:
            lines = (mail.maildir("quincy") / "maildirsize").read_text().splitlines()
        except FileNotFoundError:
            return None
        return lines if sum(int(line.split()[0]) for line in lines[1:]) > 0 else None

    size = support.wait_for(counted, timeout=DELIVERY_WAIT, interval=0.05,
                            what="the delivery counted in quincy's maildirsize")
    assert isinstance(size, list)
    limit = int(size[0].rstrip("S"))
    used = sum(int(line.split()[0]) for line in size[1:])
    c = mail.imap(user, "quincy-password", new=True)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK"
    m = re.search(rb"STORAGE (\d+) (\d+)", b" ".join(x for d in data for x in d
                                                     if isinstance(x, bytes)))
    assert m is not None, data
    # RFC 2087 counts STORAGE in units of 1024 octets (Dovecot rounds usage up).
    assert int(m.group(2)) == limit // 1024 == 1024
    assert int(m.group(1)) == -(-used // 1024) >= 1
    c.logout()


def test_login_name_case_finds_the_stored_mailbox(mail: Mail) -> None:
    # Stored lower case, typed with capitals (a phone's keyboard): found, as in SMTP AUTH.
    mail.postern("mailbox", "add", f"eve@{DOMAIN}", "--password-stdin", stdin="eve-password\n")
    mail.send(f"eve@{DOMAIN}", "for eve")
    mail.wait_delivered("eve", "for eve")
    c = mail.imap(f"Eve@{DOMAIN.upper()}", "eve-password", new=True)
    typ, data = c.select("INBOX", readonly=True)
    assert int(data[0]) == 1
    c.logout()
    # Stored with capitals: the Maildir keeps them (mail/<domain>/Ann.Lee), and so does the
    # login that reads it.
    user = f"Ann.Lee@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="ann-password\n")
    mail.send(user, "for ann")
    mail.wait_delivered("Ann.Lee", "for ann")
    c = mail.imap(user, "ann-password", new=True)
    typ, data = c.select("INBOX", readonly=True)
    assert int(data[0]) == 1
    c.logout()
    assert not mail.maildir("ann.lee").exists()


def test_dovecot_leaves_the_state_directory_as_the_permission_table_says(mail: Mail) -> None:
    # After logins, reads, flag changes and expunges: Dovecot's own files in the Maildirs,
    # its config and its run directory all match appliance/permissions.py.
    from appliance import permissions
    from appliance.users import IdMap

    mail.postern("mailbox", "add", f"tab@{DOMAIN}", "--password-stdin", stdin="tab-password\n")
    mail.send(f"tab@{DOMAIN}", "for the table")
    mail.wait_delivered("tab", "for the table")
    c = mail.imap(f"tab@{DOMAIN}", "tab-password", new=True)
    c.select("INBOX")
    c.store("1", "+FLAGS", "(\\Seen)")
    c.create("Archive")
    c.logout()
    ids = IdMap.system() if os.geteuid() == 0 else None
    dovecot_paths = (mail.app.state.mail, mail.app.state.root / "dovecot",
                     mail.app.state.run / "dovecot")
    problems = [str(p) for p in permissions.audit(mail.app.state, ids)
                if any(p.path == d or d in p.path.parents for d in dovecot_paths)]
    assert problems == []
    assert (mail.maildir("tab") / "dovecot-uidlist").exists()  # Dovecot did write there


# --- postern install: the systemd unit ---------------------------------------------------------

def test_systemd_unit_renders_the_config_then_runs_dovecot_on_it(tmp_path: Path) -> None:
    from appliance import install

    text = install.render_unit("postern-dovecot.service", python="/usr/bin/python3")
    conf = dovecot.Settings.from_state(StateDir.fhs("/"), ()).config_path
    lines = dict(line.split("=", 1) for line in text.splitlines()
                 if "=" in line and not line.startswith("#"))
    assert lines["ExecStartPre"].startswith("/usr/bin/python3 -m appliance.dovecot --state fhs ")
    assert lines["ExecStart"] == f"/usr/sbin/dovecot -F -c {conf}"
    assert lines["ConditionPathExists"] == "/usr/sbin/dovecot"
    # systemd makes the config's directory writable under ProtectSystem=strict
    assert Path("/var/lib") / lines["StateDirectory"] == conf.parent
    assert "postern-init.service" in lines["Requires"]
    target = install.render_unit(install.TARGET, python="/usr/bin/python3")
    wants = re.search(r"^Wants=(.*)$", target, re.M)
    assert wants is not None and "postern-dovecot.service" in wants.group(1).split()
    tool = support.require("systemd-analyze")
    for name in install.unit_names():  # verify resolves Requires= among the files given
        (tmp_path / name).write_text(install.render_unit(name, python="/usr/bin/python3"))
    unit = tmp_path / "postern-dovecot.service"
    done = subprocess.run([tool, "verify", *(str(tmp_path / n) for n in install.unit_names())],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    done = subprocess.run([tool, "security", "--offline=yes", str(unit)], capture_output=True,
                          text=True)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    documented = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert re.search(r"^\| `postern-dovecot\.service` \|.*\| " + re.escape(score.group(1))
                     + r" \|$", documented, re.M), f"docs/security.md: exposure {score.group(1)}"


def test_config_command_writes_what_run_writes(short_tmp: Path) -> None:
    state = StateDir.single(short_tmp / "var")
    for d in (state.root, state.run, state.tls):
        d.mkdir(parents=True, exist_ok=True)
    args = ["--state", str(state.root), "--imap", "127.0.0.1:2143", "--pop3", "off",
            "--imaps", "off", "--pop3s", "off"]
    if os.geteuid() == 0:
        from appliance.commands import run as run_command
        from mta.common import ipc
        if run_command.system_user(ipc.Daemon.LOCAL) is None:
            assert dovecot.main(args) == 78  # no user for the Maildirs: refuse, say why
            return
    assert dovecot.main(args) == 0
    conf = (state.root / "dovecot" / "dovecot.conf").read_text()
    assert "protocols = imap\n" in conf and "port = 2143" in conf
    assert dovecot.main([*args[:2], "--imap", "nonsense"]) == 64


# --- unprivileged: Dovecot run by an ordinary user ------------------------------------------

def test_runs_unprivileged_as_an_ordinary_user(short_tmp: Path) -> None:
    """The embedded default: one ordinary user runs everything, Dovecot included (no chroot,
    no mail_uid, base_dir and state_dir inside the state directory). As root the test runs
    Dovecot as ``nobody``."""
    import pwd
    import socket


    from mta.common.passwd import hash_password, render_line

    binary = support.require("dovecot", path="/usr/sbin/dovecot")
    who = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    os.chmod(short_tmp, 0o755)
    state = StateDir.single(short_tmp / "var")
    box = state.mail / DOMAIN / "uma"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    message = b"Subject: unprivileged\n\nhello\n"
    (box / "new" / f"1700000000.M1P1.test,S={len(message)}").write_bytes(message)
    state.control.mkdir()
    (state.control / "passwd").write_text(
        render_line(f"uma@{DOMAIN}", hash_password("uma-password")) + "\n")
    state.run.mkdir()
    imap_port, pop3_port = support.free_port(), support.free_port()
    s = dovecot.Settings.from_state(state, (dovecot.Endpoint("imap", "127.0.0.1", imap_port),
                                            dovecot.Endpoint("pop3", "127.0.0.1", pop3_port)))
    s = dovecot.Settings(**{**s.__dict__, "as_root": False, "own_user": who.pw_name,
                            "own_uid": who.pw_uid, "own_gid": who.pw_gid})
    config = dovecot.write_config(s)
    for path in [state.root, *state.root.rglob("*")]:
        os.chown(path, who.pw_uid, who.pw_gid)
    ids = {} if os.geteuid() != 0 else {"user": who.pw_uid, "group": who.pw_gid,
                                        "extra_groups": []}
    log = short_tmp / "dovecot.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(dovecot.argv(binary, config), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **ids)  # type: ignore[call-overload]

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dovecot exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", pop3_port), timeout=1).close()
            socket.create_connection(("127.0.0.1", imap_port), timeout=1).close()
            return True
        except OSError:
            return False
    try:
        support.wait_for(listening, timeout=30, interval=0.1, what="dovecot's listeners")
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
        c.login(f"uma@{DOMAIN}", "uma-password")
        c.select("INBOX")
        typ, data = c.fetch("1", "(BODY[])")
        assert b"Subject: unprivileged" in data[0][1]
        c.store("1", "+FLAGS", "(\\Seen)")
        c.logout()
        p = poplib.POP3("127.0.0.1", pop3_port, timeout=30)
        p.user(f"uma@{DOMAIN}")
        p.pass_("uma-password")
        assert p.stat()[0] == 1
        p.quit()
        # Every process was the ordinary user's; nothing became root.
        checked = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                    if os.getsid(int(entry.name)) != proc.pid:
                        continue
                except (OSError, ProcessLookupError):
                    continue
                uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
                assert uids is not None and {int(uids.group(1)), int(uids.group(2))} \
                    == {who.pw_uid}, status[:200]
                checked += 1
        assert checked >= 4  # master, log, config, auth, the logins ...
        seen = mailbox.Maildir(box, create=False)
        assert ["S" in m.get_flags() for m in seen] == [True]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# --- postern run without Dovecot, or with IMAP and POP3 off -------------------------------------

def test_run_says_plainly_when_dovecot_is_not_installed(short_tmp: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.commands import run as run_command

    state = StateDir.single(short_tmp / "var")
    listeners = {"imap": run_command.parse_listener("imap", "127.0.0.1:2143"),
                 "pop3": run_command.parse_listener("pop3", "off")}
    empty = short_tmp / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # as on a machine without dovecot-core
    monkeypatch.setattr(dovecot, "SEARCH_PATH", str(empty))
    said: list[str] = []
    assert run_command.dovecot_spec(state, listeners, log=said.append) is None
    assert said == ["IMAP and POP3 are off: Dovecot is not installed "
                    "(apt-get install dovecot-imapd dovecot-pop3d)"]
    assert not (state.root / "dovecot").exists()


def test_run_with_imap_and_pop3_off_starts_no_dovecot(short_tmp: Path) -> None:
    from appliance.commands import run as run_command

    said: list[str] = []
    off: dict[str, run_command.Listener | None] = {n: None for n in run_command.MAILBOX_ACCESS}
    assert run_command.dovecot_spec(StateDir.single(short_tmp), off, log=said.append) is None
    assert said == []


def test_run_spec_serves_the_listeners_it_probes(short_tmp: Path) -> None:
    from appliance.commands import run as run_command
    from appliance.supervisor import TcpProbe

    binary = support.require("dovecot", path="/usr/sbin/dovecot")
    state = StateDir.single(short_tmp / "var")
    for d in (state.root, state.run, state.tls):
        d.mkdir(parents=True, exist_ok=True)
    listeners = {"imap": run_command.parse_listener("imap", "127.0.0.1:2143"),
                 "pop3": run_command.parse_listener("pop3", "[::1]:2110")}
    said: list[str] = []
    spec = run_command.dovecot_spec(state, listeners, log=said.append)
    if spec is None:  # root whose daemons keep root: said why
        assert os.geteuid() == 0 and said and "never reads mail as root" in said[0]
        return
    assert spec.name == "dovecot"
    assert spec.argv == (binary, "-F", "-c", str(state.root / "dovecot" / "dovecot.conf"))
    assert spec.probes == (TcpProbe("imap", "127.0.0.1", 2143), TcpProbe("pop3", "::1", 2110))
    assert [p.display() for p in spec.probes if isinstance(p, TcpProbe)] \
        == ["127.0.0.1:2143", "[::1]:2110"]


def test_starttls_presents_posterns_certificate(mail: Mail) -> None:
    import ssl

    cert_pem = (mail.app.state.tls / "cert.pem").read_text()
    context = ssl.create_default_context(cadata=cert_pem)
    context.check_hostname = False  # the self-signed certificate names `me`, not 127.0.0.1
    user = f"tina@{DOMAIN}"
    mail.postern("mailbox", "add", user, "--password-stdin", stdin="tina-password\n")
    mail.imap(user, "tina-password", new=True).logout()  # published and seen by Dovecot
    host, port = mail.app.listeners["imap"]
    c = imaplib.IMAP4(host, port, timeout=30)
    c.starttls(ssl_context=context)  # verifies the chain against Postern's certificate
    peer = c.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert ssl.DER_cert_to_PEM_cert(peer).strip() == cert_pem.strip()
    c.login(user, "tina-password")
    c.logout()
    host, port = mail.app.listeners["pop3"]
    p = poplib.POP3(host, port, timeout=30)
    p.stls(context=context)
    p.user(user)
    p.pass_("tina-password")
    p.quit()
