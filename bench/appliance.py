"""Benchmark of the appliance layer: `postern run` start to ready and stop, and `sendmail` rate.

Usage: .venv/bin/python bench/appliance.py [--rounds 3] [--messages 200] [--web]

For each round: ``postern init`` a fresh state directory, ``postern run`` (SMTP and
submission on free ports, web only with --web), time until the ``postern: ready`` line, then
inject ``--messages`` 1 KB messages one ``sendmail`` process each (what cron and PHP do:
interpreter start-up included), sequentially and from 8 parallel callers, then SIGTERM and
time until the supervisor exits. Prints one line per round and the medians. Nothing here is
asserted; docs/performance.md records the results with the command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTERN = [sys.executable, "-m", "appliance.cli"]
SENDMAIL = str(Path(sys.executable).with_name("sendmail"))
sys.path.insert(0, str(ROOT))
from tests.support import free_port  # noqa: E402

MESSAGE = b"Subject: bench\n\n" + b"x" * 60 + b"\n" * 16


def one_round(base: Path, messages: int, web: bool) -> dict[str, float]:
    state = base / "var"
    subprocess.run([*POSTERN, "init", "--state", str(state), "--me", "bench.example"] +
                   ([] if web else ["--no-web"]), check=True, capture_output=True,
                   env={**os.environ, "POSTERN_ADMIN_PASSWORD": "bench"})
    args = [*POSTERN, "run", "--state", str(state), "--smtp", f"127.0.0.1:{free_port()}",
            "--submission", f"127.0.0.1:{free_port()}",
            "--web", f"127.0.0.1:{free_port()}" if web else "off"]
    started = time.monotonic()
    with open(base / "run.log", "w") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    ready = time.monotonic() - started
    assert line.startswith("postern: ready"), (base / "run.log").read_text()[-3000:]
    env = {**os.environ, "POSTERN_STATE": str(state)}

    def send(i: int) -> None:
        subprocess.run([SENDMAIL, "-i", f"bench{i}@example.net"], input=MESSAGE, env=env,
                       check=True)

    t0 = time.monotonic()
    for i in range(messages):
        send(i)
    sequential = messages / (time.monotonic() - t0)
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(messages)))
    parallel = messages / (time.monotonic() - t0)
    t0 = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    stop = time.monotonic() - t0
    return {"ready_s": ready, "sendmail_seq_msg_s": sequential,
            "sendmail_8_msg_s": parallel, "stop_s": stop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--web", action="store_true", help="also run gunicorn/celery")
    args = parser.parse_args()
    results = []
    for n in range(args.rounds):
        base = Path(tempfile.mkdtemp(prefix="postern-bench-", dir="/tmp"))
        os.chmod(base, 0o711)
        try:
            result = one_round(base, args.messages, args.web)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results.append(result)
        print(f"round {n + 1}: " + "  ".join(f"{k}={v:.2f}" for k, v in result.items()),
              flush=True)
    print("median:  " + "  ".join(f"{k}={statistics.median(r[k] for r in results):.2f}"
                                  for k in results[0]))


if __name__ == "__main__":
    main()
