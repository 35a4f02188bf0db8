"""The permission table proven on a running appliance, as root: every daemon is seen in
/proc under its own uid, and each user is made to try what it must not do.

Runs the real ``postern init`` and ``postern run`` (tests/harness.py) as root, so the daemons
drop to their users (creating the users on this machine if needed, as ``postern init`` does).
The state directory lives under /var/tmp, not pytest's 0700 tmp_path, so that the dropped
users can reach it. Each attempt runs in a forked child that drops to the user with the same
``mta.util.privs.drop_privileges`` the daemons use.
"""

from __future__ import annotations

import mailbox
import os
import pickle
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance import permissions, rootstate, users
from appliance.users import IdMap
from mta.common import ipc
from mta.common.paths import StateDir
from mta.queue.client import inject
from tests import support
from tests.harness import Appliance, init, running_appliance

pytestmark = [pytest.mark.root, pytest.mark.slow]

ME = "mx.privsep.example"
MAILBOX = f"bob@{ME}"
NOBODY = "nobody"


@pytest.fixture(scope="module")
def app() -> Iterator[Appliance]:
    support.require_root("privilege separation: each daemon drops to its own user")
    base = support.droppable_base("postern-privsep-")
    try:
        init(base / "var", "--no-web", "--me", ME)
        state = StateDir.single(base / "var")
        (state.control / "mailboxes").write_text(f"{MAILBOX}\n")
        rootstate.secure(state)
        with running_appliance(base, web=False, submission=False) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(user: str, attempt: Callable[[], object]) -> object:
    """Run ``attempt`` in a child that dropped to ``user``; return its result or exception."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 0
        try:
            os.close(read_fd)
            from mta.util.privs import drop_privileges
            drop_privileges(user)
            try:
                outcome: object = attempt()
            except OSError as exc:
                outcome = type(exc)(exc.errno, exc.strerror)
            with os.fdopen(write_fd, "wb") as pipe:
                pickle.dump(outcome, pipe)
        except BaseException:  # noqa: BLE001 - report through the exit status
            status = 1
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"the child running as {user} failed"
    return pickle.loads(data)


def denied(user: str, attempt: Callable[[], object]) -> bool:
    return isinstance(as_user(user, attempt), PermissionError)


def allowed(user: str, attempt: Callable[[], object]) -> bool:
    return not isinstance(as_user(user, attempt), OSError)


def create(path: Path) -> Callable[[], object]:
    def attempt() -> object:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(path)
        return "created"
    return attempt


def read(path: Path) -> Callable[[], object]:
    return lambda: path.read_bytes()[:10]


def listdir(path: Path) -> Callable[[], object]:
    return lambda: os.listdir(path)


def status_ids(pid: int) -> tuple[list[int], list[int], set[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return ([int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]],
            {int(x) for x in fields.get("Groups", [])})


def queued_message(app: Appliance) -> Path:
    """A file in queue/mess/0 with the owner and mode the queue daemon gives a message.

    Not a real message (a real one may be delivered and removed before the attempt runs): a
    name that is no queue id, so send, clean and the debris sweep leave it alone."""
    path = app.state.queue / "mess" / "0" / "privsep-probe"
    if not path.exists():
        path.write_bytes(b"Subject: probe\r\n\r\nbody\r\n")
        permissions.apply(app.state, IdMap.system(), create=False)
    st = os.stat(path)
    assert (pwd.getpwuid(st.st_uid).pw_name, oct(st.st_mode & 0o777)) == (users.QUEUE, "0o640")
    return path


# --- who runs what ------------------------------------------------------------------------

@pytest.mark.parametrize("daemon", ["queue", "send", "local", "remote", "clean", "smtpd",
                                    "worker"])
def test_each_daemon_runs_as_its_own_user(app: Appliance, daemon: str) -> None:
    pid = app.daemon_pid(daemon)
    assert pid is not None, app.log()
    entry = pwd.getpwnam(ipc.DAEMON_USERS[ipc.Daemon(daemon)])
    # gunicorn and celery drop their own privileges a moment after they start
    support.wait_for(lambda: status_ids(pid)[0][0] != 0, timeout=60, what=f"{daemon} to drop")
    uids, gids, groups = status_ids(pid)
    assert uids == [entry.pw_uid] * 4          # real, effective, saved, filesystem
    assert gids == [entry.pw_gid] * 4
    assert groups == set(os.getgrouplist(entry.pw_name, entry.pw_gid))


def test_only_the_supervisor_keeps_root(app: Appliance) -> None:
    uids, _gids, _groups = status_ids(app.process.pid)
    assert uids[0] == 0

    def still_root() -> list[str]:
        out = []
        children = Path(f"/proc/{app.process.pid}/task/{app.process.pid}/children").read_text()
        for child in (int(p) for p in children.split()):
            try:
                if 0 in status_ids(child)[0]:
                    out.append(Path(f"/proc/{child}/cmdline").read_bytes()
                               .replace(b"\0", b" ").decode(errors="replace"))
            except FileNotFoundError:
                continue  # exited meanwhile
        return out
    # Celery and gunicorn drop their own privileges a moment after they start.
    support.wait_for(lambda: not still_root(), timeout=60,
                     what="every daemon to have left root")


def test_the_state_directory_matches_the_table(app: Appliance) -> None:
    assert [str(p) for p in permissions.audit(app.state, IdMap.system())] == []


def test_the_web_app_and_celery_run_as_their_users_too(tmp_path: Path) -> None:
    """web (gunicorn master and workers), worker and beat: started as their users outright."""
    support.require_root("privilege separation")
    base = support.droppable_base("postern-privsep-web-")
    try:
        with running_appliance(base, smtp=False, submission=False) as running:
            for daemon, user in (("web", users.WEB), ("worker", users.ADMIN),
                                 ("beat", users.ADMIN)):
                pid = running.daemon_pid(daemon)
                assert pid is not None, running.log()
                entry = pwd.getpwnam(user)
                family = [pid, *_descendants(pid)]
                for member in family:
                    uids, gids, groups = status_ids(member)
                    assert uids == [entry.pw_uid] * 4, (daemon, member)
                    assert gids == [entry.pw_gid] * 4, (daemon, member)
                    assert groups == set(os.getgrouplist(user, entry.pw_gid)), (daemon, member)
            # what web, worker and beat write (beat's schedule, the broker) follows the table
            support.wait_for(lambda: list(running.state.run.glob("celerybeat-schedule*")),
                             timeout=60, what="beat's schedule file")
            assert [str(p) for p in permissions.audit(running.state, IdMap.system())] == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return out
    for child in (int(c) for c in children):
        out += [child, *_descendants(child)]
    return out


# --- what each user must not do -------------------------------------------------------------

def test_web_cannot_read_or_write_the_queue_or_mail(app: Appliance) -> None:
    mess = queued_message(app)
    state = app.state
    for attempt in (listdir(state.queue), read(mess), create(state.queue / "tmp" / "x"),
                    create(mess.parent / "x"), listdir(state.mail)):
        assert denied(users.WEB, attempt)


def test_smtpd_writes_the_queue_only_through_queue_sock(app: Appliance) -> None:
    state = app.state
    for sub in ("tmp", "mess/0", "todo/0", "info/0"):
        assert denied(users.SMTPD, create(state.queue / sub / "x")), sub
    assert denied(users.SMTPD, listdir(state.queue))
    queue_id = as_user(users.SMTPD, lambda: inject(
        state.queue_socket, b"", [MAILBOX.encode()], b"Subject: via the socket\r\n\r\nhi\r\n",
        origin="network"))
    assert isinstance(queue_id, str) and queue_id


def test_remote_cannot_read_mail_but_reads_the_queue(app: Appliance) -> None:
    message = delivered(app, b"for remote to try")
    assert denied(users.REMOTE, read(message))
    assert denied(users.REMOTE, listdir(app.state.mail))
    assert allowed(users.REMOTE, read(queued_message(app)))


def test_local_cannot_write_the_queue(app: Appliance) -> None:
    mess = queued_message(app)
    assert allowed(users.VMAIL, read(mess))
    for target in (app.state.queue / "tmp" / "x", mess.parent / "x",
                   app.state.queue / "todo" / "0" / "x"):
        assert denied(users.VMAIL, create(target))
    assert denied(users.VMAIL, lambda: os.unlink(mess))


def test_only_the_worker_writes_control(app: Appliance) -> None:
    control = app.state.control
    for account in users.ACCOUNTS:
        attempt = create(control / f"probe-{account.name}")
        overwrite = lambda: open(control / "me", "ab").close()  # noqa: E731
        if account.name == users.ADMIN:
            assert allowed(account.name, attempt)
            assert allowed(account.name, overwrite)
        else:
            assert denied(account.name, attempt), account.name
            assert denied(account.name, overwrite), account.name
    # as in qmail, everyone reads the configuration (sendmail needs me, defaultdomain) ...
    assert allowed(NOBODY, read(control / "me"))


def test_what_the_worker_publishes_every_daemon_reads(app: Appliance) -> None:
    """The worker writes as postern-admin; control/ is setgid, so the daemons' group reads."""
    from mta.util.atomic import write_atomic

    probe = app.state.control / "privsep-published"
    assert allowed(users.ADMIN, lambda: write_atomic(probe, b"published\n"))
    for account in users.ACCOUNTS:
        assert allowed(account.name, read(probe)), account.name
    assert allowed(NOBODY, read(probe))  # control files are public, as qmail's


def test_secrets_reach_only_their_reader(app: Appliance) -> None:
    control = app.state.control
    for name, reader in (("passwd", users.SMTPD), ("relayauth", users.REMOTE)):
        path = control / name
        path.write_text("" if name == "passwd" else "smarthost.example user secret\n")
        permissions.apply(app.state, IdMap.system(), create=False)
        assert allowed(reader, read(path))
        for account in users.ACCOUNTS:
            if account.name not in (reader, users.ADMIN):
                assert denied(account.name, read(path)), (name, account.name)
        assert denied(NOBODY, read(path))  # ... but not the secrets


def delivered(app: Appliance, marker: bytes) -> Path:
    inject(app.state.queue_socket, b"", [MAILBOX.encode()],
           b"Subject: local\r\n\r\n" + marker + b"\r\n")
    box = app.state.mail / ME / "bob"

    def find() -> Path | None:
        new = box / "new"
        for name in (os.listdir(new) if new.is_dir() else []):
            if marker in (new / name).read_bytes():
                return new / name
        return None
    found = support.wait_for(find, timeout=30, what="local delivery")
    assert isinstance(found, Path)
    return found


def test_web_and_worker_read_the_delivery_log_only_send_writes_it(app: Appliance) -> None:
    delivered(app, b"for the delivery log")
    log = app.state.log / "delivery.log"
    support.wait_for(log.exists, timeout=30, what="the delivery log")
    append = lambda: open(log, "ab").close()  # noqa: E731
    for reader in (users.WEB, users.ADMIN):
        assert allowed(reader, read(log)), reader
        assert allowed(reader, listdir(app.state.log)), reader
        assert denied(reader, append), reader
        assert denied(reader, create(app.state.log / "x")), reader
        assert denied(reader, lambda: os.rename(log, app.state.log / "moved")), reader
    for account in users.ACCOUNTS:
        if account.name not in (users.WEB, users.ADMIN, users.SEND):
            assert denied(account.name, read(log)), account.name
    assert denied(NOBODY, read(log))


def test_every_local_user_can_inject_with_sendmail_and_is_recorded(app: Appliance) -> None:
    sendmail = Path(sys.executable).with_name("sendmail")
    marker = b"from-nobody-" + os.urandom(4).hex().encode()
    nobody = pwd.getpwnam(NOBODY)
    done = subprocess.run(
        [str(sendmail), "--state", str(app.state.root), "-i", MAILBOX],
        input=b"Subject: as nobody\n\n" + marker + b"\n", capture_output=True,
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], timeout=60)
    assert done.returncode == 0, done.stderr
    def mine() -> object:
        try:
            box = mailbox.Maildir(app.state.mail / ME / "bob", factory=None, create=False)
            messages = list(box)
        except (mailbox.NoSuchMailboxError, FileNotFoundError):
            return None  # not delivered yet
        for message in messages:
            if marker in message.as_bytes():
                return message
        return None
    message = support.wait_for(mine, timeout=30, what="the sendmail message in the Maildir")
    assert f"invoked by uid {nobody.pw_uid})" in str(message["Received"])  # type: ignore[index]
    # sendmail could read control/me as nobody (no warning; else it falls back to the FQDN)
    assert b"ignored" not in done.stderr, done.stderr
    assert f"@{ME}>" in str(message["From"])  # type: ignore[index]


def test_users_are_created_once_and_stale_memberships_removed() -> None:
    support.require_root("creates system users")
    users.ensure_system_users()
    assert users.ensure_system_users() == []                      # idempotent
    assert IdMap.system().missing() == []
    # an older version's membership (vmail in postern-queue) is taken away again
    subprocess.run(["usermod", "--append", "--groups", users.QUEUE, users.VMAIL], check=True)
    assert users.ensure_system_users() == [f"{users.VMAIL} no longer in group {users.QUEUE}"]
    assert users.VMAIL not in IdMap.system().members[users.QUEUE]


def test_the_publisher_gives_each_secret_to_its_reader(app: Appliance) -> None:
    """webui's publisher, run as the worker's user (and as root, as an admin at the CLI):
    passwd goes to smtpd's group, relayauth to remote's, both 0640, owned by the worker."""
    control = app.state.control
    script = ("import os, sys, django; from pathlib import Path; "
              "os.environ['DJANGO_SETTINGS_MODULE'] = 'webui.settings.test'; django.setup(); "
              "from webui.publish.publisher import _locked, _ownership; "
              "from mta.util.atomic import write_atomic; c = Path(sys.argv[1]); "
              "files = {'passwd': b'bob@x:{PLAIN}pw::::::\\n', "
              "'relayauth': b'smarthost.example user secret\\n', 'me': b'" + ME + "\\n'}\n"
              "with _locked(c):\n"
              "    for n, d in files.items():\n"
              "        o, g, m = _ownership(c, n); write_atomic(c / n, d, mode=m, owner=o, group=g)")
    admin = users.account(users.ADMIN)
    for who in ("worker", "root"):
        ids = {} if who == "root" else {"user": admin.name, "group": admin.name,
                                        "extra_groups": list(admin.groups)}
        done = subprocess.run([sys.executable, "-c", script, str(control)], capture_output=True,
                              text=True, cwd="/", timeout=120, **ids)  # type: ignore[call-overload]
        assert done.returncode == 0, done.stderr
        for name, reader in (("passwd", users.SMTPD), ("relayauth", users.REMOTE)):
            st = os.stat(control / name)
            assert (pwd.getpwuid(st.st_uid).pw_name, st.st_mode & 0o777) == (users.ADMIN, 0o640)
            assert allowed(reader, read(control / name)), (who, name)
            for account in users.ACCOUNTS:
                if account.name not in (reader, users.ADMIN):
                    assert denied(account.name, read(control / name)), (who, name, account)
        assert os.stat(control / ".publish.lock").st_uid == pwd.getpwnam(users.ADMIN).pw_uid
    assert [str(p) for p in permissions.audit(app.state, IdMap.system())
            if p.path.parent == control] == []


# --- the systemd way: each daemon started as its user outright (User=), no --user -----------

def test_daemons_started_as_their_users_without_root_deliver_mail(tmp_path: Path) -> None:
    """What the units do: no daemon ever has root, none is given --user. smtpd's mail
    (origin=network) must still be accepted by queue, and delivered; nobody may claim it."""
    import smtplib

    from mta.queue.client import QueuePermanentError

    support.require_root("starts daemons as the system users")
    base = support.droppable_base("postern-units-")
    state = StateDir.single(base / "var")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        init(state.root, "--no-web", "--me", ME)
        (state.control / "mailboxes").write_text(f"{MAILBOX}\n")
        rootstate.secure(state)
        port = support.free_port()
        order = [("queue", ipc.QUEUE_SOCKET, []), ("clean", ipc.CLEAN_SOCKET, []),
                 ("local", ipc.LOCAL_SOCKET, []), ("remote", ipc.REMOTE_SOCKET, []),
                 ("send", ipc.STATUS_SOCKET, []),
                 ("smtpd", None, ["--smtp", f"127.0.0.1:{port}"])]
        for name, sock, extra in order:
            account = users.account(ipc.DAEMON_USERS[ipc.Daemon(name)])
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            processes.append(subprocess.Popen(
                [sys.executable, "-m", f"mta.{name}", "--state", str(state.root), *extra],
                user=account.name, group=account.name, extra_groups=list(account.groups),
                umask=0o027, stdout=log, stderr=log, cwd="/"))
            if sock is not None:
                support.wait_for((state.run / sock).exists, timeout=30, what=f"{name}'s socket")
        support.wait_for(lambda: _accepts(port), timeout=30, what="smtpd")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("someone@elsewhere.example", [MAILBOX],
                          b"Subject: units\r\n\r\nno root anywhere\r\n")
        box = state.mail / ME / "bob" / "new"
        support.wait_for(lambda: box.is_dir() and any(
            b"no root anywhere" in (box / n).read_bytes() for n in os.listdir(box)),
            timeout=60, what="delivery without any root daemon")
        refused = as_user(NOBODY, lambda: _claim_network(state))
        assert isinstance(refused, QueuePermanentError), refused
    except BaseException:
        for log_file in sorted(tmp_path.glob("*.log")):
            print(log_file.name, log_file.read_text(errors="replace")[-3000:])
        raise
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def _accepts(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _claim_network(state: StateDir) -> object:
    try:
        return inject(state.queue_socket, b"", [MAILBOX.encode()], b"Subject: x\r\n\r\nx\r\n",
                      origin="network")
    except Exception as exc:  # noqa: BLE001 - the test looks at the type
        return exc
