"""Memory for idle SMTP sessions: Postern's smtpd (one asyncio process) beside Postfix.

Usage (as root for the Postfix part; ``--no-postfix`` runs Postern alone):

    .venv/bin/python bench/smtpd_idle.py [--connections 1000] [--postfix-connections 100]

Postern: ``python -m mta.smtpd --workers 1`` with its queue daemon. The script measures the
worker's proportional set size (PSS, /proc/PID/smaps_rollup) after one warm-up session, then
opens CONNECTIONS sessions that each read the greeting and do EHLO, and stay idle; it
measures again and prints the total and the cost per session.

Postfix runs one smtpd process per session (``default_process_limit`` = 100, its default),
so the script opens that many idle sessions and sums the PSS of every smtpd process its
master started: the cost per session of the process model, same machine, same client.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.postfix_instance import PostfixInstance  # noqa: E402
from tests.mta.smtpd.conftest import start_smtpd  # noqa: E402
from tests.support import free_port  # noqa: E402


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss")


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        greeting = s.recv(4096)
        assert greeting.startswith(b"220"), greeting
        s.sendall(b"EHLO idle.test\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or b"250 " not in reply:
            reply += s.recv(4096)
        socks.append(s)
    return socks


def postern(n: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="postern-bench-idle-"))
    d = start_smtpd(base / "var", workers=1, controls={"maxconnip": "0\n",
                                                       "maxconnections": str(n + 10) + "\n"})
    try:
        for s in open_idle(d.smtp[1], 1):
            s.close()
        time.sleep(0.5)
        before = pss_kib(d.proc.pid)
        socks = open_idle(d.smtp[1], n)
        time.sleep(0.5)
        after = pss_kib(d.proc.pid)
        print(f"postern: 1 process, PSS {before} KiB idle, {after} KiB with {n} sessions: "
              f"{(after - before) / n:.1f} KiB per session", flush=True)
        for s in socks:
            s.close()
    finally:
        d.stop()
        d.queue.kill()
        shutil.rmtree(base, ignore_errors=True)


def postfix(n: int) -> None:
    port = free_port()
    with PostfixInstance(port, mailboxes=["user@bench.local"]) as pf:
        master = int((pf.root / "spool" / "pid" / "master.pid").read_text().split()[0])
        socks = open_idle(port, n)
        time.sleep(0.5)
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)
                name = fields[0].split("(", 1)[1]
                ppid = int(fields[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master and name == "smtpd":
                pids.append(int(stat.parent.name))
        total = sum(pss_kib(p) for p in pids)
        print(f"postfix: {len(pids)} smtpd processes for {n} sessions, PSS {total} KiB: "
              f"{total / n:.1f} KiB per session", flush=True)
        for s in socks:
            s.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--postfix-connections", type=int, default=100)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    postern(args.connections)
    if not args.no_postfix:
        postfix(args.postfix_connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
