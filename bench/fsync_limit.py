"""How many durable small-file commits this disk does per second: the queue's physical limit.

Each operation is what a durable queue must do at the very least for one message: create a
file, write 4 KB, fsync it, rename it into place (plus, with ``--dir-fsync``, fsync the
directory). Measured with 1 and with 20 threads (fsyncs in flight at once let the
filesystem group them into one journal commit).

Run on the filesystem that holds the queue::

    .venv/bin/python bench/fsync_limit.py [--dir DIR] [--seconds 5]

Prints one line per thread count; ``bench/inject.py`` imports ``measure()`` to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

PAYLOAD = b"x" * 4096


def measure(directory: Path, threads: int, seconds: float, dir_fsync: bool = False,
            leftovers: list[Path] | None = None) -> float:
    """Operations per second with ``threads`` threads for about ``seconds`` seconds.

    ``leftovers``: append the work directory there instead of removing it now. On ext4
    without a journal (this machine's root filesystem) a deleted inode is not reused for 60 to
    360 seconds (``recently_deleted()`` in fs/ext4/ialloc.c), and every file created in that
    time has the allocator step over it: deleting 15,000 files right before another
    measurement would slow that one down. The caller removes them when it is done.
    """
    work = Path(tempfile.mkdtemp(prefix="fsync-limit-", dir=directory))
    done = [0] * threads
    stop = threading.Event()

    def worker(n: int) -> None:
        tmpdir, final = work / f"t{n}", work / f"f{n}"
        tmpdir.mkdir()
        final.mkdir()
        dfd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        i = 0
        try:
            while not stop.is_set():
                path = tmpdir / str(i)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, PAYLOAD)
                os.fsync(fd)
                os.close(fd)
                os.rename(path, final / str(i))
                if dir_fsync:
                    os.fsync(dfd)
                i += 1
                done[n] = i
        finally:
            os.close(dfd)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if leftovers is None:
        shutil.rmtree(work)
    else:
        leftovers.append(work)
    return sum(done) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=".", help="a directory on the queue's filesystem")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir-fsync", action="store_true",
                        help="also measure with an fsync of the target directory after each rename")
    args = parser.parse_args()
    for threads in (1, 20):
        rate = measure(Path(args.dir), threads, args.seconds)
        print(f"fsync_limit threads={threads:<2} {rate:8.0f} create+write 4KB+fsync+rename per second")
    if args.dir_fsync:
        for threads in (1, 20):
            rate = measure(Path(args.dir), threads, args.seconds, dir_fsync=True)
            print(f"fsync_limit threads={threads:<2} {rate:8.0f} the same + fsync(directory) per second")


if __name__ == "__main__":
    main()
