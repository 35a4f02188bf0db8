"""The delivery log follows a rename by someone else (logrotate) and rotates by size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mta.common import deliverylog
from mta.common.deliverylog import DeliveryLog


def events(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_rename_by_logrotate_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deliverylog, "RECHECK", 0.0)  # check the path at every event
    log = DeliveryLog(tmp_path)
    log.event("received", id="a")
    (tmp_path / "delivery.log").rename(tmp_path / "rotated")
    log.event("received", id="b")
    assert events(tmp_path / "rotated") == ["a"]
    assert events(tmp_path / "delivery.log") == ["b"]
    log.close()


def test_between_checks_the_open_file_is_kept(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path)
    log.event("received", id="a")
    (tmp_path / "delivery.log").rename(tmp_path / "rotated")
    log.event("received", id="b")      # within RECHECK: still the renamed file
    assert events(tmp_path / "rotated") == ["a", "b"]
    log.close()


def test_rotation_by_size_starts_a_new_file(tmp_path: Path) -> None:
    log = DeliveryLog(tmp_path, max_bytes=200, keep=3)
    for i in range(12):
        log.event("received", id=f"m{i}")
    log.close()
    kept = [tmp_path / "delivery.log"] + [tmp_path / f"delivery.log.{n}" for n in (1, 2, 3)]
    seen = [i for p in reversed(kept) if p.exists() for i in events(p)]
    assert seen == [f"m{i}" for i in range(12)][-len(seen):]  # newest kept, in order
    assert all(p.stat().st_size <= 200 + 100 for p in kept if p.exists())


def test_events_of_one_loop_iteration_are_written_together_in_order(tmp_path: Path) -> None:
    import asyncio

    log = DeliveryLog(tmp_path)
    path = tmp_path / "delivery.log"

    async def main() -> tuple[bool, list[str]]:
        for i in range(5):
            log.event("started", id=f"m{i}")
        before = path.exists() and path.read_text() != ""
        await asyncio.sleep(0)   # the end of this iteration: one write for all five
        return before, events(path)

    before, written = asyncio.run(main())
    assert before is False
    assert written == [f"m{i}" for i in range(5)]
    log.event("delivered", id="after")   # no loop: written at once
    assert events(path)[-1] == "after"
    log.close()


def test_close_writes_what_is_still_gathered(tmp_path: Path) -> None:
    import asyncio

    log = DeliveryLog(tmp_path)

    async def main() -> None:
        log.event("started", id="late")
        log.close()                # before the loop got to flush it

    asyncio.run(main())
    assert events(tmp_path / "delivery.log") == ["late"]
