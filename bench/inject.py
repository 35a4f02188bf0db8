"""Messages per second committed through run/queue.sock, against this disk's fsync limit.

Starts a real queue daemon (``python -m mta.queue``) on a fresh state directory under
``--dir``, then injects 4 KB messages with the client library (``AsyncInjection``,
origin=network) from 1 and from 20 concurrent clients for ``--seconds`` each — with a new
connection per message (as sendmail) and, for 20, each client keeping its connection (as
smtpd's workers do) — and measures ``bench/fsync_limit.py``'s 20-thread figure on the same
filesystem in the same run, before and after the injections (the ratios use the higher).
The goal (issue 2): at least 0.5 of that limit at 20 clients. Clients run on uvloop, as
smtpd does. ``--rounds N`` then measures the goal's case in N pairs, each injection next to
a limit measured just before or after it (alternating): on a shared VM whose disk speed
swings by tens of percent from one minute to the next, the median of the pairs' ratios (with
a 95 % bootstrap interval, ``bench/compare.py``) is steadier than one ratio to the higher of
two distant limits. Between phases the injected messages are removed (nothing delivers
them here; a queue grown by every phase would slow the later ones).

    .venv/bin/python bench/inject.py [--dir DIR] [--seconds 5] [--client-procs 2]
                                     [--sync group|parallel|serial] [--rounds N]

Clients run in ``--client-procs`` processes (asyncio tasks spread over them), because on a
small machine one Python client process cannot keep the daemon busy. ``--sync`` other than
``group`` (the daemon's default: one shared syncfs per step for every waiting commit) runs the
daemon's server with ``FilesystemStore(sync=...)``: ``parallel`` (four fsyncs per message,
three of them in flight at once) or ``serial`` (the textbook one-fsync-at-a-time order,
docs/internals.md), to show what group commit gains. It also reports the
20-thread limit *with* a directory fsync per operation: the queue must fsync two
directories per message, and on ext4 that, not the file fsync, is the expensive part.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import bootstrap_median  # noqa: E402
from freshfs import fresh_filesystem  # noqa: E402
from fsync_limit import measure  # noqa: E402

from mta.common import daemon  # noqa: E402
from mta.common.paths import StateDir  # noqa: E402
from mta.queue.client import AsyncInjection, ConnectionPool  # noqa: E402

MESSAGE = (b"From: bench@example.org\r\nTo: rcpt@example.net\r\nSubject: bench\r\n\r\n"
           + b"x" * 76 + b"\r\n") * 50
MESSAGE = MESSAGE[:4096 - 2] + b"\r\n"


async def _client_loop(sock: str, tasks: int, seconds: float, reuse: bool) -> int:
    deadline = time.monotonic() + seconds
    count = 0

    async def one() -> None:
        nonlocal count
        pool = ConnectionPool(size=1) if reuse else None   # each client its own connection
        while time.monotonic() < deadline:
            inj = await AsyncInjection.open(sock, origin="network", timeout=60, pool=pool)
            await inj.begin(b"bench@example.org", [b"rcpt@example.net"])
            await inj.write(MESSAGE)
            await inj.commit()
            count += 1

    await asyncio.gather(*(one() for _ in range(tasks)))
    return count


def _client_proc(sock: str, tasks: int, seconds: float, reuse: bool,
                 out: "multiprocessing.Queue[int]") -> None:
    out.put(daemon.run(_client_loop(sock, tasks, seconds, reuse)))   # uvloop, as smtpd


def inject_rate(sock: str, clients: int, seconds: float, procs: int,
                reuse: bool = False) -> float:
    procs = max(1, min(procs, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    out: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_client_proc, args=(sock, n, seconds, reuse, out))
               for n in share]
    start = time.perf_counter()
    for w in workers:
        w.start()
    total = 0
    for _ in workers:
        try:
            total += out.get(timeout=seconds + 60)
        except queue.Empty:   # a client process died (the daemon refused?): say so, no hang
            for w in workers:
                w.kill()
            raise SystemExit("a client process gave no count; exit codes "
                             f"{[w.exitcode for w in workers]}") from None
    for w in workers:
        w.join()
    return total / (time.perf_counter() - start)


def empty_queue(state: StateDir) -> None:
    """Remove every injected message and flush the removal, between two phases: nothing
    delivers them here, and a queue grown by each phase (htree directories of thousands of
    entries per bucket) would slow every later phase, where send keeps a real queue short."""
    from mta.common.queuedirs import SPLIT_KINDS
    for kind in SPLIT_KINDS:
        for bucket in (state.queue / kind).iterdir():
            with os.scandir(bucket) as entries:
                for entry in entries:
                    os.unlink(entry.path)
    os.sync()


def serve_mode(root: str, mode: str) -> None:
    """The queue daemon's server with another sync mode (``--sync``)."""
    import logging

    from mta.common import queuedirs
    from mta.queue.server import QueueServer, bind
    from mta.queue.store import FilesystemStore

    logging.basicConfig(level=logging.WARNING)
    state = StateDir.single(root)
    state.run.mkdir(parents=True, exist_ok=True)
    sock = bind(state.queue_socket)
    store = FilesystemStore(queuedirs.create(state.queue), sync=mode)
    server = QueueServer(store=store, privileged_uids=frozenset({os.getuid()}))

    async def run() -> None:
        await server.serve(sock)
        await asyncio.Event().wait()
    asyncio.run(run())


def start_daemon(state: StateDir, mode: str) -> subprocess.Popen[bytes]:
    if mode != "group":
        command = [sys.executable, __file__, "--serve-mode", mode, str(state.root)]
    else:
        command = [sys.executable, "-m", "mta.queue", "--state", str(state.root),
                   "--log-level", "WARNING"]
    proc = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(state.queue_socket))
                return proc
            except OSError:
                time.sleep(0.05)
    proc.kill()
    raise SystemExit("queue daemon did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=".", help="a directory on the queue's filesystem")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=0,
                        help="then this many paired rounds of the 20-thread limit and 20 "
                             "clients reusing connections (order alternating)")
    parser.add_argument("--sync", choices=["group", "parallel", "serial"], default="group",
                        help="the store's sync mode (see above)")
    parser.add_argument("--serve-mode", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fresh-fs", action="store_true",
                        help="run on a new ext4 filesystem instead of --dir (bench/freshfs.py)")
    args = parser.parse_args()
    if args.serve_mode:
        serve_mode(args.serve_mode[1], args.serve_mode[0])
        return
    if args.fresh_fs:
        # 16 GiB: a million inodes, room for every limit measurement's files and every
        # message injected (nothing delivers them) over ten paired rounds
        with fresh_filesystem(size="16G") as mountpoint:
            args.dir = str(mountpoint)
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="inject-bench-", dir=args.dir))
    state = StateDir.single(work / "var")
    proc = start_daemon(state, args.sync)
    leftovers: list[Path] = []  # removed at the very end (see fsync_limit.measure)

    def inject_now(clients: int, reuse: bool) -> float:
        rate = inject_rate(str(state.queue_socket), clients, args.seconds,
                           args.client_procs, reuse)
        empty_queue(state)
        return rate

    def limit_now() -> float:
        return measure(Path(args.dir), 20, args.seconds, leftovers=leftovers)

    try:
        # The disk's figure drifts from minute to minute: it is measured before and after the
        # injections, and the ratios use the higher of the two (the conservative choice).
        limits = [limit_now()]
        dir_limits = [measure(Path(args.dir), 20, args.seconds, dir_fsync=True,
                              leftovers=leftovers)]
        order = {"group": "group-commit syncfs", "parallel": "parallel fsyncs",
                 "serial": "serial fsyncs"}[args.sync]
        rates = []
        for clients, reuse in ((1, False), (20, False), (20, True)):
            how = "a connection per message" if not reuse else "connections reused as smtpd does"
            rates.append((clients, how, inject_now(clients, reuse)))
        # The goal's case again in paired rounds: each injection beside a limit measured
        # right before or after it (the order alternates), so a slow minute of the disk
        # slows both halves of a pair; the median of the ratios with its bootstrap interval.
        paired: list[tuple[float, float]] = []
        for i in range(args.rounds):
            if i % 2 == 0:
                lim = limit_now()
                rate = inject_now(20, True)
            else:
                rate = inject_now(20, True)
                lim = limit_now()
            paired.append((lim, rate))
        limits.append(limit_now())
        dir_limits.append(measure(Path(args.dir), 20, args.seconds, dir_fsync=True,
                                  leftovers=leftovers))
        limit, dir_limit = max(limits), max(dir_limits)
        print(f"fsync_limit threads=20 {limit:8.0f} create+write 4KB+fsync+rename per second "
              f"(before {limits[0]:.0f}, after {limits[1]:.0f}: the higher counts)")
        print(f"fsync_limit threads=20 {dir_limit:8.0f} the same + fsync(directory) per second "
              f"(before {dir_limits[0]:.0f}, after {dir_limits[1]:.0f})")
        for clients, how, rate in rates:
            print(f"inject clients={clients:<2} {rate:8.0f} messages/s (4 KB, {order}, {how}), "
                  f"ratio to the 20-thread fsync limit {rate / limit:.2f} "
                  f"(to the limit with a directory fsync {rate / dir_limit:.2f})")
        if paired:
            ratios = [rate / lim for lim, rate in paired]
            for i, (lim, rate) in enumerate(paired, 1):
                print(f"paired round {i}: fsync limit {lim:6.0f}, inject clients=20 reusing "
                      f"{rate:6.0f} msg/s, ratio {rate / lim:.2f}")
            low, high = bootstrap_median(ratios)
            print(f"paired: 20 clients reusing connections / 20-thread fsync limit, median of "
                  f"{len(ratios)} rounds {statistics.median(ratios):.2f} (95 % bootstrap "
                  f"interval {low:.2f}-{high:.2f}; {sum(r >= 0.5 for r in ratios)} rounds at "
                  f"0.5 or more; goal 0.5)")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work)
        for path in leftovers:
            shutil.rmtree(path)


if __name__ == "__main__":
    main()
