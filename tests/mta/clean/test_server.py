"""clean as a real daemon: removes exactly one message's files, refuses anything not an id."""

from __future__ import annotations

import socket

from mta.common import frames, ipc, queuedirs
from mta.common.frames import recv_frame
from mta.common.paths import StateDir
from mta.clean.server import remove
from tests.mta.send.daemons import running


def ask(state: StateDir, payload: bytes) -> tuple[bytes, bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(state.clean_socket))
        s.sendall(frames.encode(ipc.C.REMOVE.value, payload))
        f = recv_frame(s, ipc.CLEAN_SERVER_FRAMES)
        assert f is not None
        return f.type, f.payload


def make(q: queuedirs.QueueDirs, inode: int) -> str:
    qid = queuedirs.make_id(1_700_000_000, 5, inode)
    for kind in ("mess", "todo", "info"):
        q.path(kind, qid).write_bytes(b"x")
    return qid


def test_removes_one_message_and_nothing_else(state: StateDir) -> None:
    q = queuedirs.create(state.queue)
    keep, gone = make(q, 0x10), make(q, 0x11)
    with running(state, "clean"):
        assert ask(state, gone.encode()) == (ipc.C.DONE.value, b"")
        assert ask(state, gone.encode()) == (ipc.C.DONE.value, b"")  # idempotent
        for bad in (b"../../etc/passwd", gone.lower().encode(), b"", b"1" * 40, b"\xff"):
            t, text = ask(state, bad)
            assert t == ipc.C.FAILED.value and text.startswith(b"refused")
        with socket.socket(socket.AF_UNIX) as s:  # a frame type clean does not take
            s.connect(str(state.clean_socket))
            s.sendall(frames.encode(b"J", b"x"))
            assert s.recv(10) == b""
    for kind in ("mess", "todo", "info"):
        assert q.path(kind, keep).exists()
        assert not q.path(kind, gone).exists()


def test_remove_reports_os_errors_as_temporary(state: StateDir) -> None:
    q = queuedirs.create(state.queue)
    qid = queuedirs.make_id(1_700_000_000, 5, 0x12)
    q.path("mess", qid).mkdir()  # unlink of a directory fails
    assert (remove(q, qid.encode()) or "").startswith("cannot remove mess/")
