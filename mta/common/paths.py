"""Where things live: the state directory and its parts (DESIGN.md "The state directory").

Development and the embedded default keep everything under one folder (``./var``); an
installed system splits it along the FHS. Every daemon and command builds its paths from a
``StateDir``; nothing else joins path strings to find a socket or a control file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mta.common import ipc

STATE_ENV = "POSTERN_STATE"
DEFAULT_STATE = "var"


@dataclass(frozen=True)
class StateDir:
    root: Path
    control: Path
    queue: Path
    mail: Path
    run: Path
    log: Path
    tls: Path
    database: Path

    @classmethod
    def single(cls, root: str | os.PathLike[str]) -> "StateDir":
        """Everything under one folder (development, tests, ``make run``)."""
        r = Path(root).absolute()
        return cls(root=r, control=r / "control", queue=r / "queue", mail=r / "mail",
                   run=r / "run", log=r / "log", tls=r / "tls", database=r / "db.sqlite3")

    @classmethod
    def fhs(cls, prefix: str | os.PathLike[str] = "/") -> "StateDir":
        """The installed layout; ``prefix`` lets image builders work on a tree."""
        p = Path(prefix)
        lib = p / "var/lib/postern"
        return cls(root=lib, control=p / "etc/postern/control", queue=p / "var/spool/postern",
                   mail=lib / "mail", run=p / "run/postern", log=p / "var/log/postern",
                   tls=p / "etc/postern/tls", database=lib / "db.sqlite3")

    @classmethod
    def from_arg(cls, state: str | os.PathLike[str] | None) -> "StateDir":
        """``--state DIR``, else ``$POSTERN_STATE``, else ``./var``. ``fhs`` means installed."""
        chosen = state or os.environ.get(STATE_ENV) or DEFAULT_STATE
        if str(chosen) == "fhs":
            return cls.fhs()
        return cls.single(chosen)

    # sockets
    @property
    def queue_socket(self) -> Path:
        return self.run / ipc.QUEUE_SOCKET

    @property
    def status_socket(self) -> Path:
        return self.run / ipc.STATUS_SOCKET

    @property
    def local_socket(self) -> Path:
        return self.run / ipc.LOCAL_SOCKET

    @property
    def remote_socket(self) -> Path:
        return self.run / ipc.REMOTE_SOCKET

    @property
    def clean_socket(self) -> Path:
        return self.run / ipc.CLEAN_SOCKET

    @property
    def trigger(self) -> Path:
        return self.run / ipc.TRIGGER_FIFO

    def control_file(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"not a control file name: {name!r}")
        return self.control / name
