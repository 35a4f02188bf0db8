"""Listening UNIX sockets for the daemons' run/*.sock, with the right mode from the start.

Used by the ``queue``, ``send`` (status.sock), ``local``, ``remote`` and ``clean`` daemons
before they drop privileges. Trusts its caller: the path is built by ``mta.common.paths.StateDir``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BACKLOG = 128


class AlreadyListening(RuntimeError):
    """Another live daemon answers on the socket: two of a kind must not run at once."""


def bind_unix(path: Path, mode: int = 0o660, *, backlog: int = BACKLOG,
              owner: str = "daemon") -> socket.socket:
    """Bind a UNIX stream socket at ``path`` with ``mode``, replacing a stale socket file.

    The umask is set around ``bind()`` so the socket never exists with a wider mode.

    Raises:
        AlreadyListening: a live daemon still accepts connections on ``path``.
    """
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        else:
            raise AlreadyListening(f"{path}: another {owner} is already listening")
        finally:
            probe.close()
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
