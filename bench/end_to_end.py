"""End to end into one Maildir, Postern beside Postfix; and the queue-scale figure.

Usage (as root: Postfix's master and ``postern run``'s privilege drop need it):

    .venv/bin/python bench/end_to_end.py [--messages 2000] [--concurrency 20] [--rounds 3]
    .venv/bin/python bench/end_to_end.py --scale 100000 [--messages 2000] [--rounds 3]

Default mode, for each round Postern then Postfix (interleaved, as
shared/reference/postfix-comparison.md asks): a fresh Postern (``postern init`` +
``postern run``: smtpd -> queue -> send -> local, ``locals``/``rcpthosts`` ``bench.local``,
``mailboxes`` ``user@bench.local``, ``maxconnip`` 0 because smtp-source is one address) or a
private Debian Postfix (tests/interop/postfix_instance.py: Maildir delivery by its ``virtual``
agent, every other setting default, fsync on); then
``smtp-source -s CONCURRENCY -m N -f from@bench.local -t user@bench.local``; the clock runs
from the start of smtp-source until N files are in the mailbox's ``new/``. Prints each run,
medians with min-max, and the ratio Postern/Postfix.

``--scale K``: Postern only. Before ``postern run`` starts, K deferred messages (one remote
recipient each, next attempt a day away) are written into the queue as send's own files; then
interleaved rounds with an empty queue and with the K-message queue. Prints the startup time
(``postern run`` start until status.sock reports all K), send's resident memory, and the
end-to-end rate with the big queue as a ratio to the empty-queue rate (the goal is >= 0.9).
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compare import verdict  # noqa: E402
from freshfs import temp_on_fresh_fs  # noqa: E402

from mta.common import queuedirs  # noqa: E402
from mta.send.info import MessageInfo, Rcpt  # noqa: E402
from mta.send.status import StatusClient  # noqa: E402
from tests.harness import init, running_appliance  # noqa: E402
from tests.interop.postfix_instance import PostfixInstance  # noqa: E402
from tests.support import free_port  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOMAIN = "bench.local"
USER = f"user@{DOMAIN}"
SETTLE = 3.0  # seconds between "ready" (and the queue loaded) and the first message


def source(port: int, n: int, concurrency: int) -> None:
    subprocess.run([SMTP_SOURCE, "-s", str(concurrency), "-m", str(n), "-f",
                    f"from@{DOMAIN}", "-t", USER, f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=3600)


def count(new: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(new))
    except FileNotFoundError:
        return 0


def timed(port: int, new: Path, n: int, concurrency: int) -> tuple[float, float, int]:
    """Seconds until all ``n`` are in ``new/``; also when smtp-source was done and how many
    were delivered by then (which side of the server is the slower)."""
    before = count(new)
    t0 = time.monotonic()
    source(port, n, concurrency)
    sent, delivered = time.monotonic() - t0, count(new) - before
    deadline = t0 + max(120.0, n / 5)
    while count(new) < before + n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count(new) - before} of {n} delivered")
        time.sleep(0.005)
    return time.monotonic() - t0, sent, delivered


def chown_like_parent(path: Path) -> None:
    st = os.stat(path.parent)
    os.chown(path, st.st_uid, st.st_gid)


def fill_queue(queue_root: Path, k: int) -> None:
    """K deferred messages as send would have left them (mess + info, no todo)."""
    dirs = queuedirs.QueueDirs.open(queue_root)
    now = int(time.time())
    body = b"Subject: deferred\r\n\r\n" + b"x" * 300 + b"\r\n"
    for i in range(k):
        qid = queuedirs.make_id(now - 1, i % 1_000_000, 10_000_000 + i)
        mess = dirs.mess(qid)
        mess.write_bytes(body)
        os.chmod(mess, 0o640)
        chown_like_parent(mess)
        info = MessageInfo(qid, now - 1, f"from@{DOMAIN}", "network", len(body), [],
                           [Rcpt(f"u{i}@deferred.example", f"u{i}@deferred.example", "remote",
                                 "pending", now + 86_400, 1, "4.4.1 connection refused")])
        path = dirs.info(qid)
        path.write_bytes(info.encode())
        os.chmod(path, 0o640)
        chown_like_parent(path)


DAEMONS = ("smtpd", "queue", "send", "local", "remote", "clean")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, descendants: bool = True) -> tuple[float, float]:
    """(user, system) CPU of ``pid`` and all its descendants (smtpd's workers, say)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    user, system, todo = 0.0, 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += (int(fields[11]) + int(fields[13])) / TICK
        system += (int(fields[12]) + int(fields[14])) / TICK
        if descendants:
            todo.extend(children.get(p, []))
    return user, system


def daemon_cpu(app: object) -> dict[str, tuple[float, float]]:
    out = {}
    for name in DAEMONS:
        pid = app.daemon_pid(name)  # type: ignore[attr-defined]
        if pid is not None:
            out[name] = cpu_seconds(pid)
    out["supervisor"] = cpu_seconds(app.process.pid, descendants=False)  # type: ignore[attr-defined]
    return out


def send_rss_kib(pid: int | None) -> int:
    if pid is None:
        return -1
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


@contextmanager
def postern(deferred: int = 0) -> Iterator[tuple[int, Path, dict[str, float]]]:
    base = Path(tempfile.mkdtemp(prefix="postern-bench-"))
    os.chmod(base, 0o711)
    root = base / "var"
    stats: dict[str, float] = {}
    try:
        init(root, "--no-web")
        control = root / "control"
        (control / "locals").write_text(f"{DOMAIN}\n")
        (control / "rcpthosts").write_text(f"{DOMAIN}\n")
        (control / "mailboxes").write_text(f"{USER}\n")
        (control / "maxconnip").write_text("0\n")  # smtp-source is one address
        if deferred:
            t = time.monotonic()
            fill_queue(root / "queue", deferred)
            os.sync()  # a queue of deferred mail has long been on disk, not in dirty pages
            print(f"  wrote {deferred} deferred messages in {time.monotonic() - t:.1f} s",
                  flush=True)
        t0 = time.monotonic()
        # running_appliance uses base/var as it is when base is world-traversable
        with running_appliance(base, submission=False, web=False, ready_timeout=600) as app:
            client = StatusClient(app.state.status_socket, timeout=120)
            while client.request("summary")["summary"]["messages"] < deferred:
                time.sleep(0.05)
            stats["startup"] = time.monotonic() - t0
            time.sleep(SETTLE)  # same quiet start for every run, big queue or not
            stats["send_rss_kib"] = send_rss_kib(app.daemon_pid("send"))
            before = daemon_cpu(app)
            yield app.listeners["smtp"][1], app.state.mail / DOMAIN / "user" / "new", stats
            stats["send_rss_kib_after"] = send_rss_kib(app.daemon_pid("send"))
            after = daemon_cpu(app)
            for name in after:  # CPU seconds (user, system) each daemon used in the run
                u0, s0 = before.get(name, (0.0, 0.0))
                stats[f"cpu_{name}_user"] = after[name][0] - u0
                stats[f"cpu_{name}_sys"] = after[name][1] - s0
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postfix() -> Iterator[tuple[int, Path, dict[str, float]]]:
    with PostfixInstance(free_port(), mailboxes=[USER]) as pf:
        time.sleep(SETTLE)
        yield pf.port, pf.maildir(USER) / "new", {}


def summary(name: str, rates: list[float]) -> str:
    return (f"{name}: median {statistics.median(rates):.0f} msg/s "
            f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fresh-fs", action="store_true",
                        help="each run on a new ext4 filesystem (bench/freshfs.py; root)")
    parser.add_argument("--scale", type=int, default=0, help="deferred messages (Postern only)")
    parser.add_argument("--only", choices=["postern", "postfix"],
                        help="run one side (for profiling; prints no ratio)")
    args = parser.parse_args()
    if args.scale:
        runs = [("postern-empty", lambda: postern(0)),
                (f"postern-{args.scale}", lambda: postern(args.scale))]
    else:
        runs = [("postern", lambda: postern(0)), ("postfix", postfix)]
        runs = [(name, start) for name, start in runs if args.only in (None, name)]
    results: dict[str, list[float]] = {name: [] for name, _ in runs}
    for r in range(args.rounds):
        for name, start in runs:
            with temp_on_fresh_fs(args.fresh_fs), start() as (port, new, stats):
                seconds, sent, delivered = timed(port, new, args.messages, args.concurrency)
                stats["sent_s"], stats["delivered_when_sent"] = sent, delivered
            rate = args.messages / seconds
            results[name].append(rate)
            extra = "".join(f", {k} {v:.2f}" if k == "sent_s" else
                            f", {k} {v:.1f}" if k == "startup" or k.startswith("cpu_")
                            else f", {k} {v:.0f}"
                            for k, v in stats.items())
            print(f"round {r + 1} {name}: {args.messages} messages in {seconds:.2f} s = "
                  f"{rate:.0f} msg/s{extra}", flush=True)
    for name, rates in results.items():
        print(summary(name, rates))
    if len(runs) < 2:
        return 0
    a, b = (name for name, _ in runs)
    if args.scale:
        print(f"ratio {b}/{a}: {statistics.median(results[b]) / statistics.median(results[a]):.2f}")
    else:
        print(verdict(results[a], results[b]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
