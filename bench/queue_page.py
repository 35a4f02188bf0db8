"""How fast the web app's queue pages answer with a big queue (issue 6: 100,000 messages,
the queue page under 300 ms).

Makes a state directory with ``postern init``, fills its queue with ``--messages`` committed
messages through the queue's own store (``mta.queue.store.FilesystemStore``: the files the
queue daemon would write, fsynced), starts the real ``send`` daemon on it (no local/remote
workers, so nothing leaves the queue), waits until send has loaded them all, then times
(median and max of ``--rounds``):

* send's status.sock answers the web app uses: ``summary`` and ``list`` (50 a page),
* the whole Django pages ``/queue/`` and ``/queue/messages/`` (request to rendered HTML,
  through the Django test client, test settings, in-process).

    .venv/bin/python bench/queue_page.py [--messages 100000] [--rounds 20] [--dir DIR]

Prints one line per measurement; docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

from mta.common.envelope import Envelope  # noqa: E402
from mta.common.paths import StateDir  # noqa: E402
from mta.queue.store import FilesystemStore  # noqa: E402

MESSAGE = (b"From: bench@example.net\r\nTo: someone@elsewhere.example\r\n"
           b"Subject: queue page benchmark\r\n\r\n" + b"x" * 2000 + b"\r\n")


def fill(state: StateDir, count: int, threads: int = 16) -> float:
    store = FilesystemStore.open(state.queue)
    env = Envelope(uid=os.getuid(), pid=os.getpid(), origin="local", birth=int(time.time()),
                   sender=b"bench@example.net",
                   recipients=(b"someone@elsewhere.example", b"other@far.example"))

    def one(_: int) -> str:
        draft = store.new_message()
        draft.write(MESSAGE)
        return draft.commit(env)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(one, range(count)), start=1):
            if done % 10000 == 0:
                print(f"  {done} messages queued", file=sys.stderr)
    store.close()
    return time.perf_counter() - start


def timed(fn, rounds: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="postern-queuepage-", dir=args.dir))
    state = StateDir.single(base / "var")
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    send = None
    try:
        subprocess.run([sys.executable, "-m", "appliance.cli", "init", "--state",
                        str(state.root), "--no-web"], cwd=ROOT, check=True, env=env,
                       capture_output=True)
        took = fill(state, args.messages)
        print(f"queued {args.messages} messages in {took:.1f} s")
        send = subprocess.Popen([sys.executable, "-m", "mta.send", "--state", str(state.root)],
                                cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        from mta.send.status import StatusClient

        client = StatusClient(state.status_socket, timeout=60)
        start = time.perf_counter()
        while True:
            try:
                if client.request("summary")["summary"]["messages"] >= args.messages:
                    break
            except OSError:
                pass
            if time.perf_counter() - start > 900:
                raise SystemExit("send did not load the queue in 15 minutes")
            time.sleep(10)  # a summary costs send O(queue) CPU: do not slow its loading
        print(f"send loaded the queue in {time.perf_counter() - start:.1f} s")

        med, mx = timed(lambda: client.request("summary"), args.rounds)
        print(f"status.sock summary: median {med:.1f} ms, max {mx:.1f} ms")
        med, mx = timed(lambda: client.request("list", offset=0, limit=50), args.rounds)
        print(f"status.sock list (50): median {med:.1f} ms, max {mx:.1f} ms")
        med, mx = timed(lambda: client.request("list", offset=args.messages - 50, limit=50),
                        args.rounds)
        print(f"status.sock list (last page): median {med:.1f} ms, max {mx:.1f} ms")

        os.environ["DJANGO_SETTINGS_MODULE"] = "webui.settings.test"
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment
        from django.test.runner import DiscoverRunner

        setup_test_environment()
        DiscoverRunner(verbosity=0).setup_databases()
        settings.POSTERN_STATUS_SOCKET = state.status_socket
        root = get_user_model().objects.create_superuser("bench", "", "bench password")
        web = Client()
        web.force_login(root)
        for name, url in (("/queue/", "/queue/"), ("/queue/messages/", "/queue/messages/"),
                          ("/queue/messages/?state=deferred", "/queue/messages/?state=deferred")):
            outcomes: list[str] = []

            def page(url: str = url) -> None:
                resp = web.get(url)
                # past webui/queue/status.py's STATUS_TIMEOUT the page says send did not answer
                outcomes.append("send did not answer" if b"send-down" in resp.content
                                else str(resp.status_code))
            med, mx = timed(page, args.rounds)
            print(f"page {name}: median {med:.1f} ms, max {mx:.1f} ms "
                  f"({', '.join(sorted(set(outcomes)))})")
    finally:
        if send is not None:
            send.terminate()
            send.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
