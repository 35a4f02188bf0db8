"""End to end, "never lost": mail flows in over SMTP while random daemons are SIGKILLed.

The whole appliance runs (``postern run`` via tests/harness.py: smtpd, queue, send, local,
clean under the supervisor, which restarts what dies). Client threads send ``MESSAGES``
messages over SMTP; a killer sends SIGKILL to a random daemon every ``KILL_EVERY`` seconds.
A message counts as accepted only when DATA got 250; a client that sees anything else
(refused connection, 4xx, a dropped session) tries that message again, as a real client
would. At the end every accepted message must be in the Maildir exactly once or more:
losses fail the test, duplicates (the at-least-once window) are counted and reported.

Scale: the issue's 2,000 messages (``POSTERN_CHAOS_MESSAGES`` to change), about 40 s on this
2-core machine with a kill every 2 s. The disk-full variant is ``test_disk_full_*`` below when it
exists; until then it is not covered here.
"""

from __future__ import annotations

import mailbox
import os
import random
import signal
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.harness import running_appliance
from tests.support import wait_for

MESSAGES = int(os.environ.get("POSTERN_CHAOS_MESSAGES", "2000"))
CLIENTS = 4
KILL_EVERY = 2.0
VICTIMS = ("smtpd", "queue", "send", "local", "clean")


def send_one(host: str, port: int, n: int) -> bool:
    body = (f"From: chaos@client.example\r\nTo: joe@example.com\r\nSubject: chaos {n}\r\n"
            f"Message-ID: <chaos-{n}@client.example>\r\n\r\nmessage {n}\r\n")
    try:
        with smtplib.SMTP(host, port, timeout=20) as s:
            s.ehlo("client.example")
            s.sendmail("chaos@client.example", ["joe@example.com"], body)
        return True
    except (smtplib.SMTPException, OSError):
        return False


@pytest.mark.slow
def test_nothing_accepted_is_lost_while_daemons_are_killed(tmp_path: Path) -> None:
    with running_appliance(tmp_path, web=False, submission=False) as app:
        control = app.state.control
        (control / "locals").write_text("example.com\n")
        (control / "rcpthosts").write_text("example.com\n")
        (control / "mailboxes").write_text("joe@example.com\n")
        host, port = app.listeners["smtp"]

        def accepts() -> bool:
            try:
                with smtplib.SMTP(host, port, timeout=10) as s:
                    s.ehlo("client.example")
                    s.mail("probe@client.example")
                    return s.rcpt("joe@example.com")[0] == 250
            except (smtplib.SMTPException, OSError):
                return False
        wait_for(accepts, timeout=30, what="smtpd to accept joe@example.com")

        accepted: list[int] = []
        todo = list(range(MESSAGES))
        lock = threading.Lock()
        stop = threading.Event()
        kills: Counter[str] = Counter()

        def client() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    n = todo.pop()
                while not send_one(host, port, n):
                    time.sleep(0.05)
                with lock:
                    accepted.append(n)

        def killer() -> None:
            rng = random.Random(4)
            order: list[str] = []
            while not stop.wait(KILL_EVERY):
                if not order:  # every daemon once per round, in a random order
                    order = rng.sample(VICTIMS, len(VICTIMS))
                name = order.pop()
                pid = app.daemon_pid(name)
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills[name] += 1
                    except ProcessLookupError:
                        pass

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        k = threading.Thread(target=killer)
        k.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        # on a quiet machine the mail is in before every daemon was killed once: go on
        # killing (now during delivery) until each one has been
        deadline = time.monotonic() + KILL_EVERY * (len(VICTIMS) + 2)
        while sum(kills.values()) < len(VICTIMS) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        k.join()

        box = app.state.mail / "example.com" / "joe"

        def delivered() -> Counter[int]:
            if not (box / "cur").is_dir():
                return Counter()
            got: Counter[int] = Counter()
            for msg in mailbox.Maildir(box, create=False):
                subject = msg["Subject"] or ""
                if subject.startswith("chaos "):
                    got[int(subject.split()[1])] += 1
            return got

        def all_in() -> bool:
            got = delivered()
            return all(got[n] for n in accepted)
        try:
            wait_for(all_in, timeout=60, interval=0.5, what="every accepted message delivered")
        finally:
            got = delivered()
            lost = sorted(n for n in accepted if not got[n])
            dups = sum(c - 1 for c in got.values() if c > 1)
            print(f"\nchaos: {len(accepted)} accepted, {len(lost)} lost, {dups} duplicates, "
                  f"kills {dict(kills)}")
        assert len(accepted) == MESSAGES
        assert not lost
        assert sum(kills.values()) >= len(VICTIMS), kills


@pytest.mark.slow
@pytest.mark.root
def test_disk_full_is_4xx_at_the_door_and_nothing_is_lost(tmp_path: Path) -> None:
    """queue/ on a small tmpfs: fill it mid-run, free it again; every 250 arrives."""
    import subprocess
    import tempfile

    from tests.harness import init
    from tests.support import require_root

    require_root("mounts a small tmpfs for the queue")
    base = Path(tempfile.mkdtemp(prefix="postern-full-", dir="/tmp"))
    os.chmod(base, 0o711)
    root = base / "var"
    init(root, "--no-web")
    queue = root / "queue"
    st = os.stat(queue)
    mounted = False
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size=24m,mode={st.st_mode & 0o7777:o},uid={st.st_uid},gid={st.st_gid}",
                        "tmpfs", str(queue)], check=True)
        mounted = True
        init(root, "--no-web")  # again: the queue layout, owners and modes inside the tmpfs
        # base is world-traversable, so the harness runs base/var as initialised above
        with running_appliance(base, submission=False, web=False) as app:
            mail = app.state.mail
            control = app.state.control
            (control / "locals").write_text("example.com\n")
            (control / "rcpthosts").write_text("example.com\n")
            (control / "mailboxes").write_text("joe@example.com\n")
            host, port = app.listeners["smtp"]
            refused: list[str] = []

            def attempt(n: int) -> bool:
                body = f"Subject: full {n}\r\n\r\n" + ("x" * 70 + "\r\n") * 30
                try:
                    with smtplib.SMTP(host, port, timeout=20) as s:
                        s.sendmail("c@client.example", ["joe@example.com"], body)
                    return True
                except smtplib.SMTPResponseException as exc:
                    assert 400 <= exc.smtp_code < 500, exc  # never a 5xx for a full disk
                    refused.append(str(exc.smtp_code))
                except (smtplib.SMTPException, OSError) as exc:
                    if isinstance(exc, smtplib.SMTPRecipientsRefused):
                        codes = [c for c, _ in exc.recipients.values()]
                        assert all(400 <= c < 500 for c in codes), exc
                    refused.append(type(exc).__name__)
                return False

            wait_for(lambda: attempt(-1), timeout=30, what="first delivery")
            accepted = [-1]
            for n in range(50):
                if attempt(n):
                    accepted.append(n)
            # Fill the disk only once the queue is empty: a message finished while the filler
            # grows would free its pages and let the next one in, and the door never sees full.
            wait_for(lambda: not any(p.is_file() for p in (queue / "mess").rglob("*")),
                     timeout=60, interval=0.2, what="the queue to drain before filling the disk")
            filler = queue / "filler"
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 64 * 1024)
                except OSError:
                    pass
            full_refusals = 0
            for n in range(50, 80):
                if attempt(n):
                    accepted.append(n)
                else:
                    full_refusals += 1
            filler.unlink()
            for n in range(80, 130):
                wait_for(lambda n=n: attempt(n), timeout=30, what=f"message {n} after space")
                accepted.append(n)

            box = mail / "example.com" / "joe"

            def subjects() -> Counter[int]:
                got: Counter[int] = Counter()
                if (box / "cur").is_dir():
                    for msg in mailbox.Maildir(box, create=False):
                        got[int((msg["Subject"] or "full 0").split()[1])] += 1
                return got
            try:
                wait_for(lambda: all(subjects()[n] for n in accepted), timeout=60,
                         interval=0.5, what="every accepted message delivered")
            except AssertionError:
                missing = [n for n in accepted if not subjects()[n]]
                raise AssertionError(f"not delivered: {missing}\n" + app.log()[-6000:])
            assert full_refusals > 0, "the disk never looked full at the door"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(queue)], check=False)
        import shutil
        shutil.rmtree(base, ignore_errors=True)
