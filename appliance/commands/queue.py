"""``postern queue``: the mail queue as qmail-qread / mailq (or qmail-qstat with --summary).

Asks ``send`` over ``run/status.sock`` (read-only; see docs/internals.md "status.sock") and
prints what it answers. ``--json`` prints the status.sock answer unchanged (the stable,
documented shape) for scripts. Trusts the answer's shape no more than any peer's: fields are
read with defaults and printed without interpretation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from mta.common.paths import StateDir
from mta.send.status import MESSAGE_STATES, StatusClient, StatusRequestError

EX_TEMPFAIL = 75


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("queue", help="show the mail queue (like mailq / qmail-qread)",
                                   description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--summary", action="store_true",
                        help="counts only (like qmail-qstat)")
    parser.add_argument("--json", action="store_true", help="print status.sock's JSON answer")
    parser.add_argument("--state-filter", dest="filter_state", choices=MESSAGE_STATES,
                        help="only messages in this state")
    parser.add_argument("--sender", help="only messages whose sender contains this")
    parser.add_argument("--recipient", help="only messages with a recipient containing this")
    parser.add_argument("--domain", help="only messages with a recipient in this domain")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--id", help="one message in detail")
    parser.set_defaults(func=run)


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run(args: argparse.Namespace) -> int:
    state = StateDir.from_arg(getattr(args, "state", None))
    client = StatusClient(state.status_socket)
    try:
        if args.summary:
            answer = client.request("summary")
        elif args.id:
            answer = client.request("message", id=args.id)
        else:
            fields = {k: v for k, v in (("state", args.filter_state), ("sender", args.sender),
                                        ("recipient", args.recipient), ("domain", args.domain))
                      if v is not None}
            answer = client.request("list", offset=args.offset, limit=args.limit, **fields)
    except StatusRequestError as exc:
        print(f"postern queue: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"postern queue: cannot reach send at {state.status_socket}: {exc}",
              file=sys.stderr)
        return EX_TEMPFAIL
    if args.json:
        json.dump(answer, sys.stdout, indent=2, ensure_ascii=False)
        print()
    elif args.summary:
        print_summary(answer.get("summary", {}))
    elif args.id:
        print_message(answer.get("message", {}))
    else:
        print_list(answer)
    return 0


def print_summary(s: dict[str, Any]) -> None:
    states = s.get("states", {})
    rc = s.get("recipients", {})
    print(f"messages in queue: {s.get('messages', 0)}")
    print("  " + ", ".join(f"{k} {v}" for k, v in states.items()))
    print(f"recipients: {rc.get('pending', 0)} pending, {rc.get('delivered', 0)} delivered, "
          f"{rc.get('failed', 0)} failed")
    print(f"bytes: {s.get('total_bytes', 0)}; oldest: {_age(s.get('oldest_age'))}")
    for domain, n in s.get("domains", {}).items():
        print(f"  {n:6d}  {domain}")


def print_list(answer: dict[str, Any]) -> None:
    for m in answer.get("messages", []):
        when = time.strftime("%d %b %Y %H:%M:%S GMT", time.gmtime(m.get("birth", 0)))
        print(f"{when}  {m.get('id')}  {m.get('size')} bytes  {m.get('state')}  "
              f"from <{m.get('sender', '')}>")
        for r in m.get("recipients", []):
            mark = {"delivered": "done", "failed": "fail"}.get(r.get("state"), "    ")
            print(f"    {mark}  {r.get('route', ''):6s} <{r.get('address')}>")
        extra = m.get("recipient_count", 0) - len(m.get("recipients", []))
        if extra > 0:
            print(f"          ... and {extra} more")
    total = answer.get("total", 0)
    shown = len(answer.get("messages", []))
    if shown < total:
        print(f"({shown} of {total} shown; use --offset/--limit)")


def print_message(m: dict[str, Any]) -> None:
    print(f"id: {m.get('id')}\nstate: {m.get('state')}\nsender: <{m.get('sender', '')}>\n"
          f"origin: {m.get('origin')}\nsize: {m.get('size')}\nage: {_age(m.get('age'))}")
    for k, v in m.get("headers", {}).items():
        print(f"{k}: {v}")
    for r in m.get("recipients", []):
        nxt = r.get("next_attempt")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(nxt)) if nxt else "-"
        print(f"  <{r.get('address')}> {r.get('state')} via {r.get('route')}, "
              f"{r.get('attempts')} attempts, next {when}")
        if r.get("last_result"):
            print(f"      {r.get('last_result')}")
