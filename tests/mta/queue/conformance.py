"""The behaviour every QueueStore must have; run against each backend by test_store.py.

Like trio.testing's ``check_one_way_stream``: a backend is given as a ``StoreHarness`` that
can build a store and do the few things only the test needs (play ``send``'s part by
marking a message as preprocessed, age a file). Nothing here knows which backend it runs on.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mta.common.envelope import Envelope
from mta.common.queuedirs import parse_id
from mta.queue.store import DEBRIS_AGE, QueueStore


@dataclass
class StoreHarness:
    make: Callable[[], QueueStore]                  # a fresh, empty store
    reopen: Callable[[QueueStore], QueueStore]      # the same queue, as after a restart
    preprocess: Callable[[QueueStore, str], None]   # send: write info, remove todo
    make_debris: Callable[[QueueStore, bytes, float], str]  # a mess file without todo/info, aged
    make_full: Callable[[], QueueStore] | None = None  # a store with ~64 KiB free, or None


def envelope(n: int = 1) -> Envelope:
    return Envelope(uid=1000, pid=4242, origin="local", birth=1_700_000_000,
                    sender=b"alice@example.org",
                    recipients=tuple(b"r%d@example.net" % i for i in range(n)))


def nothing_partial(store: QueueStore) -> None:
    assert store.tmp_entries() == []
    assert set(store.messages()) == set(store.committed())


def check_write_commit_read(h: StoreHarness) -> None:
    store = h.make()
    draft = store.new_message()
    parse_id(draft.queue_id)
    draft.write(b"Subject: one\r\n\r\n")
    draft.write(b"body\r\n")
    queue_id = draft.commit(envelope(3))
    assert queue_id == draft.queue_id
    assert store.committed() == [queue_id]
    assert store.read_message(queue_id) == b"Subject: one\r\n\r\nbody\r\n"
    assert store.read_envelope(queue_id) == envelope(3)
    nothing_partial(store)


def check_empty_message(h: StoreHarness) -> None:
    store = h.make()
    queue_id = store.new_message().commit(envelope())
    assert store.read_message(queue_id) == b""


def check_ids_unique(h: StoreHarness) -> None:
    store = h.make()
    ids = [store.new_message().commit(envelope()) for _ in range(50)]
    assert len(set(ids)) == 50
    assert sorted(ids) == store.committed()


def check_abort_leaves_nothing(h: StoreHarness) -> None:
    store = h.make()
    draft = store.new_message()
    draft.write(b"half a message")
    draft.abort()
    draft.abort()  # twice is harmless
    assert store.messages() == [] and store.committed() == []
    nothing_partial(store)
    with pytest.raises(KeyError):
        store.read_message(draft.queue_id)


def check_abort_after_commit_keeps_message(h: StoreHarness) -> None:
    store = h.make()
    draft = store.new_message()
    draft.write(b"x\r\n")
    queue_id = draft.commit(envelope())
    draft.abort()
    assert store.read_message(queue_id) == b"x\r\n"


def check_concurrent_drafts_are_independent(h: StoreHarness) -> None:
    store = h.make()
    drafts = [store.new_message() for _ in range(5)]
    for i, d in enumerate(drafts):
        d.write(b"message %d\r\n" % i)
    drafts[1].abort()
    ids = {i: d.commit(envelope()) for i, d in enumerate(drafts) if i != 1}
    for i, queue_id in ids.items():
        assert store.read_message(queue_id) == b"message %d\r\n" % i
    nothing_partial(store)


def check_survives_reopen(h: StoreHarness) -> None:
    store = h.make()
    draft = store.new_message()
    draft.write(b"kept\r\n")
    queue_id = draft.commit(envelope())
    again = h.reopen(store)
    assert again.committed() == [queue_id]
    assert again.read_message(queue_id) == b"kept\r\n"


def check_startup_cleanup(h: StoreHarness) -> None:
    store = h.make()
    committed = store.new_message().commit(envelope())
    in_tmp = store.new_message()           # a crash while writing: a tmp file
    in_tmp.write(b"partial")
    preprocessed = store.new_message().commit(envelope())
    h.preprocess(store, preprocessed)     # send moved it to info: not debris
    young = h.make_debris(store, b"young\r\n", 5.0)
    old = h.make_debris(store, b"old\r\n", DEBRIS_AGE + 60)
    report = store.cleanup(min_age=0, wipe_tmp=True)
    assert report.tmp_removed >= 1
    assert report.debris_removed == 2
    assert store.tmp_entries() == []
    assert sorted(store.messages()) == sorted([committed, preprocessed])
    assert young not in store.messages() and old not in store.messages()


def check_hourly_sweep_spares_young_debris(h: StoreHarness) -> None:
    store = h.make()
    in_tmp = store.new_message()
    in_tmp.write(b"in flight")
    young = h.make_debris(store, b"young\r\n", 5.0)
    old = h.make_debris(store, b"old\r\n", DEBRIS_AGE + 60)
    report = store.cleanup(min_age=DEBRIS_AGE, wipe_tmp=False)
    assert report.debris_removed == 1 and report.kept_young == 1
    assert store.messages() == [young]
    assert store.tmp_entries() != []  # an injection in progress is not touched
    in_tmp.write(b" still writing")
    in_tmp.commit(envelope())
    assert old not in store.messages()


def check_full_store_loses_nothing(h: StoreHarness) -> None:
    if h.make_full is None:
        pytest.skip("this harness has no full store")
    store = h.make_full()
    kept = {}
    for i in range(3):
        d = store.new_message()
        d.write(b"old message %d\r\n" % i)
        kept[d.commit(envelope())] = b"old message %d\r\n" % i
    failed = 0
    for _ in range(200):
        try:
            d = store.new_message()
        except OSError as exc:
            assert exc.errno in (errno.ENOSPC, errno.EDQUOT)
            failed += 1
            continue
        try:
            d.write(b"x" * 16_384)
            d.commit(envelope())
        except OSError as exc:
            assert exc.errno in (errno.ENOSPC, errno.EDQUOT)
            d.abort()
            failed += 1
    assert failed > 0
    for queue_id, data in kept.items():
        assert store.read_message(queue_id) == data
    nothing_partial(store)


CHECKS = [check_write_commit_read, check_empty_message, check_ids_unique,
          check_abort_leaves_nothing, check_abort_after_commit_keeps_message,
          check_concurrent_drafts_are_independent, check_survives_reopen,
          check_startup_cleanup, check_hourly_sweep_spares_young_debris,
          check_full_store_loses_nothing]
