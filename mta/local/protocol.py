"""The delivery-job conversation (local.sock / remote.sock), sans I/O: frames in, a Job out.

Used by the ``local`` daemon to read what ``send`` asks (REMOTE may use it too), and by
``send``'s client (``encode_job``). The peer is another daemon, trusted no more than the
network: frame order is enforced (``J`` id, ``F`` sender, ``T`` recipient+, ``P`` param*,
``G``), the queue id is validated with ``queuedirs.parse_id`` before any path is built from
it, and an address with a control character is refused. Any violation is a ``FrameError``
and the caller closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.common import frames, ipc
from mta.common.frames import Frame, FrameError
from mta.common.queuedirs import QueueId, QueueIdError, parse_id
from mta.common.results import Outcome, Result

J = ipc.J


@dataclass
class Job:
    queue_id: QueueId
    sender: bytes
    recipients: list[bytes] = field(default_factory=list)
    params: list[bytes] = field(default_factory=list)


def _check_address(raw: bytes, what: str) -> bytes:
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise FrameError(f"control character in the {what}")
    return raw


class JobAssembler:
    """Feed frames one at a time; ``feed()`` returns the Job when ``G`` arrives."""

    def __init__(self) -> None:
        self._job: Job | None = None
        self._have_sender = False

    def feed(self, frame: Frame) -> Job | None:
        t = frame.type
        if self._job is None:
            if t != J.JOB.value:
                raise FrameError(f"expected a job frame, got {t!r}")
            try:
                self._job = Job(parse_id(frame.payload), b"")
            except QueueIdError as exc:
                raise FrameError(f"bad queue id: {exc}") from exc
            self._have_sender = False
            return None
        job = self._job
        if t == J.SENDER.value and not self._have_sender and not job.recipients:
            job.sender = _check_address(frame.payload, "sender")
            self._have_sender = True
        elif t == J.RECIPIENT.value and self._have_sender and not job.params:
            if not frame.payload:
                raise FrameError("empty recipient")
            if len(job.recipients) >= ipc.MAX_RECIPIENTS:
                raise FrameError("too many recipients in one job")
            job.recipients.append(_check_address(frame.payload, "recipient"))
        elif t == J.PARAM.value and job.recipients:
            job.params.append(_check_address(frame.payload, "parameter"))
        elif t == J.GO.value and job.recipients:
            self._job = None
            return job
        else:
            raise FrameError(f"frame {t!r} out of order in a delivery job")
        return None


def encode_job(queue_id: str, sender: bytes, recipients: list[bytes],
               params: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    out = [frames.encode(J.JOB.value, queue_id.encode("ascii")),
           frames.encode(J.SENDER.value, sender)]
    out += [frames.encode(J.RECIPIENT.value, r) for r in recipients]
    out += [frames.encode(J.PARAM.value, p) for p in params]
    out.append(frames.encode(J.GO.value))
    return b"".join(out)


_RESULT_FRAME = {Outcome.DELIVERED: J.DELIVERED.value, Outcome.TEMPORARY: J.TEMPFAIL.value,
                 Outcome.PERMANENT: J.PERMFAIL.value}
_FRAME_RESULT = {v: k for k, v in _RESULT_FRAME.items()}


def encode_result(result: Result) -> bytes:
    return frames.encode(_RESULT_FRAME[result.outcome],
                         result.text.encode("utf-8", "replace")[:ipc.MAX_TEXT])


def decode_result(frame: Frame) -> Result:
    """A worker's answer for one recipient; the text starts with the enhanced code."""
    text = frame.payload.decode("utf-8", "replace")
    code = text.split(" ", 1)[0]
    enhanced = code if code[:1] in "245" and code.count(".") == 2 else ""
    return Result(_FRAME_RESULT[frame.type], text, enhanced)
