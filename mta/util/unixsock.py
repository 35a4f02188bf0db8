"""Listening UNIX sockets for the daemons' run/*.sock, with the right mode from the start.

Used by the ``queue``, ``send`` (status.sock), ``local``, ``remote`` and ``clean`` daemons
before they drop privileges. Trusts its caller: the path is built by ``mta.common.paths.StateDir``.
"""

from __future__ import annotations

import os
import pwd
import socket
import struct
from collections.abc import Iterable
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


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (Linux SO_PEERCRED)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected UNIX socket (from the kernel)."""
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))
    return int(uid)


class PeerCheck:
    """Who may talk to a socket beyond what its mode allows: root, this process's own user,
    and the named users. The file mode admits a whole group; this narrows it to the peers a
    protocol names (``ipc.PEERS``). Users that do not exist (single-user runs) are skipped.

    The uids are looked up at the first check, i.e. after the daemon dropped privileges.
    """

    def __init__(self, users: Iterable[str]) -> None:
        self._users = tuple(users)
        self._uids: frozenset[int] | None = None

    def allowed_uids(self) -> frozenset[int]:
        if self._uids is None:
            uids = {0, os.geteuid()}
            for user in self._users:
                try:
                    uids.add(pwd.getpwnam(user).pw_uid)
                except KeyError:
                    pass
            self._uids = frozenset(uids)
        return self._uids

    def allows(self, sock: socket.socket | None) -> bool:
        if sock is None:
            return False
        try:
            return peer_uid(sock) in self.allowed_uids()
        except OSError:
            return False
