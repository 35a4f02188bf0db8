"""The ``clean`` daemon's one job: remove a finished message from the queue when send asks.

Serves ``run/clean.sock``: ``X <queue id>`` -> ``K`` (removed, or already gone) or
``Z <text>``. The id is validated with ``queuedirs.parse_id`` before any path is built, so
the only files it can ever remove are ``queue/{mess,todo,info}/<N>/<valid id>``. Order:
info last (send's record of the message is the last thing to go).

No ``fsync``: send asks only once the message's finished state is on disk (its info file,
written through a group commit) or, for a message finished by its first results, once its
todo entry is gone. A removal that a power failure undoes brings back files send already
knows to be finished (it asks again at start) or a ``mess`` file alone (debris, swept by the
queue daemon). qmail-clean does the same. The unlinks run on the event loop: without a flush they do not wait for the disk.

The peer (send) is trusted no more than the network: a malformed frame closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import os

from mta.common import ipc
from mta.common.frames import FrameError, encode, read_frame
from mta.common.queuedirs import SPLIT_KINDS, QueueDirs, QueueIdError, parse_id
from mta.util.unixsock import PeerCheck

SEND_ONLY = PeerCheck([ipc.DAEMON_USERS[ipc.Daemon.SEND]])  # ipc.PEERS: only send
log = logging.getLogger("postern.clean")

# info last: while it exists, send still knows the message (queuedirs.SPLIT_KINDS order).
REMOVE_ORDER = tuple([k for k in SPLIT_KINDS if k != "info"] + ["info"])


def remove(queue: QueueDirs, raw_id: bytes) -> str | None:
    """Remove every file of one message; None when done, else the reason (temporary)."""
    try:
        qid = parse_id(raw_id)
    except QueueIdError as exc:
        return f"refused: {exc}"
    for kind in REMOVE_ORDER:
        path = queue.path(kind, qid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"cannot remove {kind}/{qid}: {exc.strerror}"
    return None


async def handle(queue: QueueDirs, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    if not SEND_ONLY.allows(writer.get_extra_info("socket")):
        log.warning("refusing a clean.sock connection: the peer is not send")
        writer.close()
        return
    try:
        while True:
            frame = await read_frame(reader, ipc.CLEAN_CLIENT_FRAMES)
            if frame is None:
                break
            error = remove(queue, frame.payload)
            if error is None:
                writer.write(encode(ipc.C.DONE.value))
            else:
                log.warning("clean %r: %s", frame.payload[:64], error)
                writer.write(encode(ipc.C.FAILED.value, error.encode()[:ipc.MAX_TEXT]))
            await writer.drain()
    except FrameError as exc:
        log.warning("closing a clean.sock connection: %s", exc)
    except ConnectionError:
        pass
    finally:
        writer.close()
