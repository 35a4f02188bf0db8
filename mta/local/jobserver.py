"""The I/O half of the delivery-job conversation: one connection on local.sock or remote.sock.

Shared by the ``local`` and ``remote`` daemons (beside ``protocol.py``, which holds the rules:
frames in, a ``Job`` out). The peer must be ``send`` (or root): anyone else is closed at
once (``SO_PEERCRED``). Then jobs arrive one after another; each gets one result frame per
recipient, in order. A protocol violation closes the connection and is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mta.common import ipc
from mta.common.frames import FrameError, read_frame
from mta.common.results import Result
from mta.local.protocol import Job, JobAssembler, encode_result
from mta.util.unixsock import PeerCheck

log = logging.getLogger("postern.jobs")

SEND_ONLY = PeerCheck([ipc.DAEMON_USERS[ipc.Daemon.SEND]])  # ipc.PEERS: only send


async def serve_jobs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     run_job: Callable[[Job], Awaitable[list[Result]]], socket_name: str) -> None:
    """Answer the jobs on one connection with ``run_job``'s results until the peer closes."""
    if not SEND_ONLY.allows(writer.get_extra_info("socket")):
        log.warning("refusing a %s connection: the peer is not send", socket_name)
        writer.close()
        return
    assembler = JobAssembler()
    try:
        while True:
            frame = await read_frame(reader, ipc.DELIVERY_CLIENT_FRAMES)
            if frame is None:
                break
            job = assembler.feed(frame)
            if job is None:
                continue
            results = await run_job(job)
            writer.write(b"".join(encode_result(r) for r in results))
            await writer.drain()
    except FrameError as exc:
        log.warning("closing a %s connection: %s", socket_name, exc)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
