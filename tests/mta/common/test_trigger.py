"""mta/common/trigger.py: what the queue writes into run/trigger and what send makes of it."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mta.common.queuedirs import QueueIdError, make_id, parse_id
from mta.common.trigger import MAX_LINE, Poker, TriggerParser, TriggerReader, capacity

ids = st.builds(make_id, st.integers(0, 0xFFFFFFFF), st.integers(0, 999_999),
                st.integers(0, 2**64 - 1))


@given(st.lists(ids, max_size=20), st.lists(st.integers(0, 2000), max_size=10))
def test_ids_come_out_whatever_the_reads_cut(names: list[str], cuts: list[int]) -> None:
    data = b"".join(n.encode() + b"\n" for n in names)
    parser = TriggerParser()
    got, full = [], False
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        chunk_ids, chunk_full = parser.feed(data[start:cut])
        got += [str(q) for q in chunk_ids]
        full |= chunk_full
        start = cut
    assert got == names and not full and not parser.drained()


def _is_id(line: bytes) -> bool:
    try:
        parse_id(line.decode("ascii"))
        return True
    except (QueueIdError, UnicodeDecodeError):
        return False


@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.one_of(ids.map(str.encode), st.binary(max_size=30)), max_size=6)
                 .map(lambda parts: b"\n".join(parts))))
def test_anything_else_asks_for_a_full_scan_and_never_crashes(data: bytes) -> None:
    parser = TriggerParser()
    got, full = parser.feed(data)
    full |= parser.drained()
    lines = data.split(b"\n")
    only_ids = lines[-1] == b"" and all(_is_id(line) for line in lines[:-1])
    assert full is (not only_ids)
    assert [str(q).encode() for q in got] == [line for line in lines[:-1] if _is_id(line)]


def test_qmails_one_byte_and_long_lines_ask_for_a_full_scan() -> None:
    parser = TriggerParser()
    assert parser.feed(b"!") == ([], False)
    assert parser.drained()                    # the FIFO is empty: "!" was not an id
    assert parser.feed(b"x" * (MAX_LINE + 1)) == ([], True)
    assert parser.feed(b"not-an-id\n")[1] is True
    assert not parser.drained()


def test_poker_writes_whole_lines_and_survives_no_reader(tmp_path: Path) -> None:
    path = tmp_path / "trigger"
    poker = Poker(path)
    poker.poke("nothing-there-yet")            # no FIFO: ignored
    os.mkfifo(path)
    poker.poke("no-reader")                    # ENXIO: ignored
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert capacity(fd) >= 4096
        qid = make_id(1_700_000_000, 5, 77)
        poker.poke(qid)
        poker.poke(qid)
        assert os.read(fd, 4096) == (qid + "\n").encode() * 2
    finally:
        os.close(fd)
    poker.poke(qid)                            # the reader went: EPIPE, closed, no raise
    poker.close()
    regular = tmp_path / "regular"
    regular.write_bytes(b"")
    Poker(regular).poke(qid)                   # not a FIFO: refused, nothing written
    assert regular.read_bytes() == b""


def test_a_full_fifo_asks_for_a_full_scan(tmp_path: Path) -> None:
    """When send is far behind, the queue's write fails (EAGAIN) and that id is lost: the
    reader, finding the FIFO (nearly) full, scans everything instead of trusting the ids."""
    path = tmp_path / "trigger"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    poker = Poker(path)
    try:
        reader = TriggerReader(rfd)
        qid = make_id(1_700_000_000, 5, 77)
        poker.poke(qid)
        ids, full = reader.drain()
        assert [str(q) for q in ids] == [qid] and not full
        written = 0
        while written < capacity(rfd) + 4096:        # more than it holds: some are dropped
            poker.poke(qid)
            written += len(qid) + 1
        ids, full = reader.drain()
        assert full and ids and all(str(q) == qid for q in ids)
        assert reader.drain() == ([], False)         # drained: back to trusting the ids
    finally:
        poker.close()
        os.close(rfd)
