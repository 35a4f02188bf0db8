"""The delivery-job frames: order enforced, ids validated, results round-trip."""

from __future__ import annotations

import pytest

from mta.common import ipc
from mta.common.frames import Frame, FrameDecoder, FrameError
from mta.common.results import Outcome, Result
from mta.local.protocol import JobAssembler, decode_result, encode_job, encode_result

QID = "6565A1B20000A1F"


def frames_of(data: bytes) -> list[Frame]:
    dec = FrameDecoder(ipc.DELIVERY_CLIENT_FRAMES)
    dec.feed(data)
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(f)
    return out


def test_job_round_trip() -> None:
    asm = JobAssembler()
    got = [asm.feed(f) for f in frames_of(encode_job(QID, b"a@b", [b"x@y", b"z@y"], [b"X=1"]))]
    job = got[-1]
    assert job is not None and got[:-1] == [None] * (len(got) - 1)
    assert str(job.queue_id) == QID and job.sender == b"a@b"
    assert job.recipients == [b"x@y", b"z@y"] and job.params == [b"X=1"]


@pytest.mark.parametrize("sequence", [
    [(b"F", b"a")],                                     # no job frame
    [(b"J", b"../../etc/passwd")],                      # not an id
    [(b"J", QID.lower().encode())],                     # lower case is not an id
    [(b"J", QID.encode()), (b"T", b"x@y")],             # recipient before sender
    [(b"J", QID.encode()), (b"F", b""), (b"G", b"")],   # no recipient
    [(b"J", QID.encode()), (b"F", b""), (b"T", b"a\nb@c")],
    [(b"J", QID.encode()), (b"F", b""), (b"T", b"")],
])
def test_bad_sequences_are_refused(sequence: list[tuple[bytes, bytes]]) -> None:
    asm = JobAssembler()
    with pytest.raises(FrameError):
        for t, p in sequence:
            asm.feed(Frame(t, p))


def test_results_round_trip() -> None:
    dec = FrameDecoder(ipc.DELIVERY_SERVER_FRAMES)
    for outcome, text in [(Outcome.DELIVERED, "2.0.0 ok"), (Outcome.TEMPORARY, "4.2.2 full"),
                          (Outcome.PERMANENT, "5.1.1 <x@y>: 550 no such user")]:
        dec.feed(encode_result(Result(outcome, text)))
        frame = dec.next_frame()
        assert frame is not None
        r = decode_result(frame)
        assert (r.outcome, r.text) == (outcome, text)
        assert r.enhanced == text.split()[0]
