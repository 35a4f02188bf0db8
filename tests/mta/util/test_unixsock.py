"""mta/util/unixsock.py: socket modes, live-daemon refusal, and the kernel-reported peer."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from mta.util.unixsock import AlreadyListening, PeerCheck, bind_unix, peer_uid
from tests.support import require_root

NOBODY = 65534


def test_binds_with_the_mode_and_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    sock = bind_unix(path, 0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(AlreadyListening, match="another queue daemon"):
            bind_unix(path, owner="queue daemon")
    finally:
        sock.close()


def test_peer_uid_is_the_connecting_process_user() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_uid(a) == os.getuid()
        assert PeerCheck([]).allows(a)
        assert not PeerCheck([]).allows(None)


def test_a_peer_that_is_not_named_is_refused() -> None:
    require_root("connects as another user")
    # pytest's tmp_path lies under a 0700 folder that nobody cannot traverse
    base = Path(tempfile.mkdtemp(prefix="postern-peer-", dir="/tmp"))
    os.chmod(base, 0o755)
    path = base / "p.sock"
    server = bind_unix(path, 0o666)
    server.settimeout(10)  # a child that could not connect must fail the test, not hang it
    try:
        pid = os.fork()
        if pid == 0:  # the child becomes nobody and connects
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                c = socket.socket(socket.AF_UNIX)
                c.connect(str(path))
                c.recv(1)
            finally:
                os._exit(0)
        conn, _ = server.accept()
        with conn:
            assert peer_uid(conn) == NOBODY
            assert not PeerCheck(["postern-send"]).allows(conn)
            assert PeerCheck(["nobody"]).allows(conn)
        os.waitpid(pid, 0)
    finally:
        server.close()
        shutil.rmtree(base)
