"""The web app's window on the queue: send's read-only status.sock, nothing else (DESIGN.md
principle 5: the web process has no access to the queue files).

A thin wrapper over send's own ``StatusClient`` (mta/send/status.py, JSON shapes in
docs/internals.md) that turns "the socket is missing, refused or silent" into ``SendDown``
so pages can say so plainly. Answers are untrusted data from another process: templates
escape every field, and the views only read the documented keys.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

STATUS_TIMEOUT = 5.0  # seconds; a page must not hang on a stuck scheduler


class SendDown(Exception):
    """send's status socket did not answer; ``str()`` says why, for the page."""


class QueueRequestError(Exception):
    """send understood the request and refused it (unknown id, bad filter)."""


def _client(path: os.PathLike[str] | str | None = None) -> Any:
    from mta.send.status import StatusClient

    return StatusClient(path or settings.POSTERN_STATUS_SOCKET, timeout=STATUS_TIMEOUT)


def request(verb: str, *, socket_path: os.PathLike[str] | str | None = None,
            **fields: Any) -> dict[str, Any]:
    from mta.send.status import StatusRequestError

    try:
        return dict(_client(socket_path).request(verb, **fields))
    except StatusRequestError as exc:
        raise QueueRequestError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise SendDown("send is not running (its status socket does not exist)") from exc
    except ConnectionRefusedError as exc:
        raise SendDown("send is not running (nobody listens on its status socket)") from exc
    except (OSError, ValueError) as exc:
        raise SendDown(f"send did not answer: {exc}") from exc


def summary(**kw: Any) -> dict[str, Any]:
    return dict(request("summary", **kw)["summary"])


def listing(*, socket_path: Any = None, **filters: Any) -> dict[str, Any]:
    return request("list", socket_path=socket_path, **filters)


def message(queue_id: str, *, socket_path: Any = None) -> dict[str, Any]:
    return dict(request("message", socket_path=socket_path, id=queue_id)["message"])
