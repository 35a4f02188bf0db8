"""send's status.sock answers in-process, without sockets or disk (issue 6: 100,000 messages).

Builds a ``Scheduler`` holding ``--messages`` messages (2 recipients each, 4 domains, a
quarter of them tried once) the way send loads its queue (``add_many``), then times
``status.answer`` for each request the web app and ``postern queue`` make (median and max of
``--rounds``): the summary (running totals), unfiltered pages, pages filtered by state and
domain (indexes), and by sender/recipient substring (a scan of every message: the bound).

    .venv/bin/python bench/status_answers.py [--messages 100000] [--rounds 20]

docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mta.send.info import MessageInfo, Rcpt  # noqa: E402
from mta.send.scheduler import Scheduler  # noqa: E402
from mta.send.status import answer  # noqa: E402

T0 = 1_700_000_000


def build(n: int) -> list[MessageInfo]:
    out = []
    for i in range(n):
        doms = (f"d{i % 4}.example", f"e{i % 7}.example")
        rc = [Rcpt(f"u{i}@{d}", f"u{i}@{d}", "remote", "pending", T0 + 3600, 1 if i % 4 == 0
                   else 0) for d in doms]
        out.append(MessageInfo(f"6565A1B2{i:06X}1F", T0 + (i * 7919) % n, f"s{i}@x.example",
                               "network", 2100, [], rc))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    infos = build(args.messages)
    s = Scheduler(lifetime=604800)
    t = time.perf_counter()
    s.add_many(infos)
    print(f"add_many of {args.messages} messages: {(time.perf_counter() - t) * 1000:.0f} ms")
    last = max(0, args.messages - 50)
    for name, req in (("summary", {"verb": "summary"}),
                      ("list first 50", {"verb": "list", "limit": 50}),
                      ("list last 50", {"verb": "list", "offset": last, "limit": 50}),
                      ("list state=deferred", {"verb": "list", "state": "deferred", "limit": 50}),
                      ("list state=deferred, last page",
                       {"verb": "list", "state": "deferred", "offset": args.messages // 4 - 50,
                        "limit": 50}),
                      ("list domain=d1.example", {"verb": "list", "domain": "d1.example",
                                                  "limit": 50}),
                      ("list sender=s12", {"verb": "list", "sender": "s12", "limit": 50}),
                      ("list recipient=u99", {"verb": "list", "recipient": "u99", "limit": 50})):
        raw = json.dumps(req).encode()
        samples = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            json.dumps(answer(s, raw, mess_path=lambda q: Path("/nonexistent"), now=T0 + 10))
            samples.append((time.perf_counter() - t) * 1000)
        print(f"{name}: median {statistics.median(samples):.1f} ms, max {max(samples):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
