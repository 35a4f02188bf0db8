"""Listening UNIX sockets for the daemons' run/*.sock, with the right mode from the start.

Used by the ``local``, ``send`` (status.sock) and ``clean`` daemons before they drop
privileges. Trusts its caller: the path is built by ``mta.common.paths.StateDir``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BACKLOG = 128


def bind_unix(path: Path, mode: int = 0o660) -> socket.socket:
    """Bind a UNIX stream socket at ``path`` (replacing a stale one) with ``mode``.

    The umask is set around ``bind()`` so the socket never exists with a wider mode.
    """
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
    sock.listen(BACKLOG)
    return sock
