"""send's writer of ``queue/info`` files: every state saved at once shares two flushes.

Run by ``send`` alone (``service.py`` asks, one save per message at a time under that
message's lock). Saves that arrive while a group is being written wait and form the next
group, which is written in one trip to a thread:

1. each new state into ``info/<N>/.<id>.tmp`` (no fsync);
2. one group commit (``mta/util/groupsync.py``: a ``syncfs`` of the queue's filesystem)
   makes all their data durable;
3. each temp file renamed over ``info/<N>/<id>`` — where readers see it whole;
4. a second group commit makes the renames durable; only then does any caller go on
   (to bounce, to clean, to forget the todo entry);
5. for a message's first save, its ``todo/<N>/<id>`` entry is removed, after the callers
   were answered (no flush needed: a ``todo`` entry beside an ``info`` file is removed
   again at the next start).

That is two flushes per group instead of two fsyncs per message (the file and its
directory). An error for one message (a full disk) fails that save alone; its temp file is
removed and the caller retries. Trusts its caller; the ids are validated ``QueueId``s.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mta.common.queuedirs import QueueDirs
from mta.util.atomic import unlink_logged
from mta.util.groupsync import GroupSync

log = logging.getLogger("postern.send")

SAVE_BATCH: Final = 512   # states written per trip to the thread
INFO_MODE: Final = 0o640
_TMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Save:
    queue_id: str
    data: bytes
    first: bool
    done: asyncio.Future[OSError | None]


@dataclass
class InfoSaver:
    queue: QueueDirs
    group: GroupSync
    _pending: list[_Save] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None
    groups: int = 0     # for tests and benchmarks: trips to the thread

    async def save(self, queue_id: str, data: bytes, *, first: bool) -> OSError | None:
        """Write ``data`` as ``queue_id``'s info file; None once it is durable, else the error.

        ``first``: no info file was saved before, so the todo entry goes afterwards.
        """
        done: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Save(queue_id, data, first, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await done

    async def drained(self) -> None:
        """Wait until every save asked for so far is written and its todo entry is gone."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:SAVE_BATCH], self._pending[SAVE_BATCH:]
            self.groups += 1
            try:
                results = await asyncio.to_thread(
                    write_group, self.queue, self.group, [(s.queue_id, s.data, s.first)
                                                          for s in batch], unlink_todo=False)
            except OSError as exc:   # the group commit itself failed: nothing is durable
                results = [exc] * len(batch)
            except Exception as exc:  # a bug: fail these saves (they retry), never hang them
                log.exception("writing %d delivery states failed", len(batch))
                results = [OSError(errno.EIO, f"internal error: {exc}")] * len(batch)
            for s, result in zip(batch, results):
                if not s.done.done():
                    s.done.set_result(result)
            todo = [self.queue.todo(s.queue_id) for s, result in zip(batch, results)
                    if s.first and result is None]
            if todo:                                      # 5, off the callers' path
                await asyncio.to_thread(_unlink_all, todo)


def write_group(queue: QueueDirs, group: GroupSync, items: list[tuple[str, bytes, bool]],
                *, unlink_todo: bool = True) -> list[OSError | None]:
    """Steps 1-4 of the module docstring for ``items`` (id, state, first save), and step 5
    with ``unlink_todo``; blocking.

    Returns one result per item. Raises ``OSError`` only when a group commit fails, which
    fails every item (their temp files are removed; old states stay as they were).
    """
    results: list[OSError | None] = [None] * len(items)
    written: list[tuple[int, Path, Path]] = []
    for i, (queue_id, data, _first) in enumerate(items):
        target = queue.info(queue_id)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            fd = os.open(tmp, _TMP_FLAGS, INFO_MODE)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as exc:
            results[i] = exc
            _unlink(tmp)
            continue
        written.append((i, tmp, target))
    if not written:
        return results
    try:
        group.sync()                                  # 2: the data
    except OSError:
        for _, tmp, _ in written:
            _unlink(tmp)
        raise
    renamed = []
    for i, tmp, target in written:
        try:
            os.rename(tmp, target)                    # 3
            renamed.append(i)
        except OSError as exc:
            results[i] = exc
            _unlink(tmp)
    if renamed:
        group.sync()                                  # 4: the names
    for i in renamed:
        queue_id, _, first = items[i]
        if first and unlink_todo:
            _unlink(queue.todo(queue_id))             # 5
    return results


def _unlink(path: Path) -> None:
    unlink_logged(path, log)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        unlink_logged(path, log)
