"""Acceptance rate of the SMTP receiver: Postern's smtpd + queue beside Postfix's smtpd.

Usage (as root: Postfix's master needs it):

    .venv/bin/python bench/smtpd_accept.py [--messages 2000] [--concurrency 20] [--rounds 3]
                                           [--size 375] [--workers 2]

What is timed: ``smtp-source -s CONCURRENCY -m N [-l SIZE]`` from its start to its exit,
i.e. until every message got its ``250`` after DATA — which Postern only gives after the
queue daemon has written and fsynced the message and its envelope, and Postfix after its
cleanup has done the same. Nothing is delivered: Postern runs only ``queue`` and
``smtpd`` (``python -m mta.smtpd --workers W``); Postfix (tests/interop/postfix_instance.py,
defaults otherwise, fsync on) puts every message on hold
(``check_recipient_access static:HOLD``) so its queue manager does not deliver either.
Rounds alternate Postern, Postfix (shared/reference/postfix-comparison.md); the script
prints every run, the medians with min-max, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.postfix_instance import PostfixInstance  # noqa: E402
from tests.mta.smtpd.conftest import start_smtpd  # noqa: E402
from tests.support import free_port  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOMAIN = "bench.local"
USER = f"user@{DOMAIN}"


def source(port: int, n: int, concurrency: int, size: int) -> float:
    t0 = time.monotonic()
    subprocess.run([SMTP_SOURCE, "-s", str(concurrency), "-m", str(n), "-l", str(size),
                    "-f", f"from@{DOMAIN}", "-t", USER, f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return time.monotonic() - t0


def postern_round(n: int, concurrency: int, size: int, workers: int) -> float:
    base = Path(tempfile.mkdtemp(prefix="postern-bench-accept-"))
    d = start_smtpd(base / "var", workers=workers, tls=False, controls={
        "me": f"mx.{DOMAIN}\n", "locals": f"{DOMAIN}\n", "rcpthosts": f"{DOMAIN}\n",
        "mailboxes": f"{USER}\n", "aliases": "", "maxconnip": "0\n", "passwd": ""})
    try:
        elapsed = source(d.smtp[1], n, concurrency, size)
        stored = len(d.queue.store().committed())
        if stored != n:
            raise RuntimeError(f"Postern queued {stored} of {n}")
        return elapsed
    finally:
        d.stop()
        d.queue.kill()
        shutil.rmtree(base, ignore_errors=True)


def postfix_round(n: int, concurrency: int, size: int) -> float:
    port = free_port()
    hold = ("smtpd_recipient_restrictions = check_recipient_access static:HOLD, "
            "permit_mynetworks, reject_unauth_destination")
    with PostfixInstance(port, mailboxes=[USER], extra=hold) as pf:
        elapsed = source(port, n, concurrency, size)
        held = sum(len(files) for _, _, files in os.walk(pf.root / "spool" / "hold"))
        if held != n:
            raise RuntimeError(f"Postfix held {held} of {n}")
        return elapsed


def summary(name: str, rates: list[float]) -> str:
    return (f"{name}: median {statistics.median(rates):.0f} msg/s "
            f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=375)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"postern": [], "postfix": []}
    for r in range(args.rounds):
        for name in ("postern", "postfix"):
            if name == "postern":
                t = postern_round(args.messages, args.concurrency, args.size, args.workers)
            else:
                t = postfix_round(args.messages, args.concurrency, args.size)
            rate = args.messages / t
            rates[name].append(rate)
            print(f"round {r + 1} {name}: {args.messages} in {t:.2f} s = {rate:.0f} msg/s",
                  flush=True)
    print(summary("postern", rates["postern"]))
    print(summary("postfix", rates["postfix"]))
    print(f"ratio postern/postfix: "
          f"{statistics.median(rates['postern']) / statistics.median(rates['postfix']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
