"""Benchmark of mailbox access through the Dovecot that Postern configures.

Usage: .venv/bin/python bench/dovecot.py [--messages 200] [--logins 20]

Starts the whole appliance (tests/harness.py: ``postern init`` + ``postern run`` with IMAP
and POP3 on free ports, web off), adds one mailbox with ``postern mailbox add``, delivers
``--messages`` 2 KB messages over SMTP into its Maildir, then measures: the time from
``postern run`` to the ready line (Dovecot included), one IMAP LOGIN (argon2id verification
in Dovecot's auth process; median of ``--logins``), with the name typed in another case (the
second, lower-casing passdb: two verifications), SELECT + FETCH of every message's headers
and bodies, and POP3 LIST + RETR of every message. Nothing is asserted; docs/performance.md
records the results with the command and the machine.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import poplib
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.harness import running_appliance  # noqa: E402

POSTERN = [sys.executable, "-m", "appliance.cli"]
DOMAIN = "bench.example"
PASSWORD = "bench-password"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--logins", type=int, default=20)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pdb-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        started = time.monotonic()
        with running_appliance(base, imap=True, pop3=True, web=False) as app:
            ready = time.monotonic() - started  # includes postern init
            env = {**os.environ, "POSTERN_STATE": str(app.state.root)}
            for cmd, stdin in ((["domain", "add", DOMAIN], None),
                               (["mailbox", "add", f"user@{DOMAIN}", "--password-stdin"],
                                PASSWORD + "\n")):
                subprocess.run([*POSTERN, *cmd], input=stdin, text=True, env=env, check=True,
                               capture_output=True)
            body = ("x" * 70 + "\r\n") * 28
            with smtplib.SMTP(*app.listeners["smtp"]) as smtp:
                for n in range(args.messages):
                    smtp.sendmail("bench@elsewhere.example", [f"user@{DOMAIN}"],
                                  f"Subject: bench {n}\r\n\r\n{body}".encode())
            new = app.state.mail / DOMAIN / "user" / "new"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if new.is_dir() and len(os.listdir(new)) >= args.messages:
                    break
                time.sleep(0.1)
            host, port = app.listeners["imap"]
            logins, other_case = [], []
            for _ in range(args.logins):
                t = time.monotonic()
                c = imaplib.IMAP4(host, port)
                c.login(f"user@{DOMAIN}", PASSWORD)
                logins.append(time.monotonic() - t)
                c.logout()
                t = time.monotonic()
                c = imaplib.IMAP4(host, port)
                c.login(f"User@{DOMAIN}", PASSWORD)
                other_case.append(time.monotonic() - t)
                c.logout()
            c = imaplib.IMAP4(host, port)
            c.login(f"user@{DOMAIN}", PASSWORD)
            t = time.monotonic()
            c.select("INBOX")
            typ, data = c.fetch(f"1:{args.messages}", "(BODY.PEEK[])")
            fetch = time.monotonic() - t
            c.logout()
            host, port = app.listeners["pop3"]
            p = poplib.POP3(host, port)
            p.user(f"user@{DOMAIN}")
            p.pass_(PASSWORD)
            t = time.monotonic()
            count = len(p.list()[1])
            for n in range(1, count + 1):
                p.retr(n)
            pop = time.monotonic() - t
            p.quit()
        print(f"init+run to ready (with Dovecot): {ready:.2f} s")
        print(f"IMAP LOGIN, name as stored: median {statistics.median(logins) * 1000:.0f} ms")
        print(f"IMAP LOGIN, other case: median {statistics.median(other_case) * 1000:.0f} ms")
        print(f"IMAP SELECT + FETCH BODY[] of {args.messages} x 2 KB: {fetch * 1000:.0f} ms")
        print(f"POP3 LIST + RETR of {count} x 2 KB: {pop * 1000:.0f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
