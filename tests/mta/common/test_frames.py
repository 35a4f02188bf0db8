"""mta/common/frames.py: the frame codec refuses what a protocol does not allow."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mta.common.frames import Frame, FrameDecoder, FrameError, encode

LIMITS = {b"F": 900, b"M": 65536, b"E": 0}


def test_decodes_frames_fed_byte_by_byte() -> None:
    wire = encode(b"F", b"a@b") + encode(b"M", b"hello") + encode(b"E")
    dec = FrameDecoder(LIMITS)
    got = []
    for i in range(len(wire)):
        dec.feed(wire[i:i + 1])
        while (frame := dec.next_frame()) is not None:
            got.append(frame)
    assert got == [Frame(b"F", b"a@b"), Frame(b"M", b"hello"), Frame(b"E", b"")]


def test_unknown_type_is_refused() -> None:
    dec = FrameDecoder(LIMITS)
    dec.feed(encode(b"X", b""))
    with pytest.raises(FrameError, match="unexpected"):
        dec.next_frame()


def test_length_over_limit_is_refused_before_the_payload_arrives() -> None:
    dec = FrameDecoder(LIMITS)
    dec.feed(b"F" + (901).to_bytes(4, "big"))  # header only: a liar needs no payload
    with pytest.raises(FrameError, match="exceeds"):
        dec.next_frame()


def test_a_frame_that_lies_about_its_length_waits_for_more() -> None:
    dec = FrameDecoder(LIMITS)
    dec.feed(b"F" + (10).to_bytes(4, "big") + b"abc")
    assert dec.next_frame() is None


def test_encode_refuses_non_letter_types() -> None:
    with pytest.raises(ValueError):
        encode(b"1", b"")


@given(st.lists(st.tuples(st.sampled_from([b"F", b"M", b"E"]), st.binary(max_size=900))),
       st.integers(min_value=1, max_value=50))
def test_round_trip_in_any_chunking(frames: list[tuple[bytes, bytes]], step: int) -> None:
    frames = [(t, b"" if t == b"E" else p) for t, p in frames]
    wire = b"".join(encode(t, p) for t, p in frames)
    dec = FrameDecoder(LIMITS)
    out = []
    for i in range(0, len(wire), step):
        dec.feed(wire[i:i + step])
        while (f := dec.next_frame()) is not None:
            out.append((f.type, f.payload))
    assert out == frames


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_frames_or_frame_error(data: bytes) -> None:
    dec = FrameDecoder(LIMITS)
    dec.feed(data)
    try:
        while dec.next_frame() is not None:
            pass
    except FrameError:
        pass
