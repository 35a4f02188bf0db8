"""A brand-new ext4 filesystem for one benchmark run (``--fresh-fs`` in the benches).

Why: this machine's root filesystem is ext4 *without a journal*, and there the inode
allocator will not reuse an inode deleted in the last 60 to 360 seconds
(``recently_deleted()`` in fs/ext4/ialloc.c, checked only when there is no journal): every
file created steps over each one, reading its inode block. A run that follows another
run's cleanup (thousands of deleted queue and Maildir files) pays for it, so the order of
interleaved runs, not the MTAs, decided much of the old "disk drift". A fresh filesystem per
run gives every run the same start.

The filesystem is what Debian's ``mkfs.ext4`` makes by default (``/etc/mke2fs.conf``: with a
journal, as a Debian install has), initialised in full at mkfs (a new filesystem otherwise
zeroes its inode tables in the background for its first seconds, which no long-lived spool
does), in a sparse image file under ``/var/tmp`` on a loop device with direct I/O (so a
flush on it is a flush of the real disk, not of the page cache).
Needs root. Both MTAs get one each, made the same way.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIZE = "4G"  # sparse: only what the run writes takes space


@contextmanager
def fresh_filesystem(directory: str = "/var/tmp", size: str = SIZE) -> Iterator[Path]:
    """Yield the mount point of a new, empty, world-traversable ext4 filesystem of ``size``
    (sparse; its inode count grows with it)."""
    work = Path(tempfile.mkdtemp(prefix="bench-fs-", dir=directory))
    image, mountpoint = work / "fs.img", work / "mnt"
    mountpoint.mkdir()
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    # Inode tables and journal zeroed now, not by ext4lazyinit in the first seconds after
    # mount, where it would compete with the run's own writes.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(image)], check=True)
    loop = subprocess.run(["losetup", "--direct-io=on", "-f", "--show", str(image)],
                          check=True, capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mountpoint)], check=True)
        try:
            os.chmod(work, 0o755)
            os.chmod(mountpoint, 0o755)
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
        image.unlink(missing_ok=True)
        mountpoint.rmdir()
        work.rmdir()


@contextmanager
def temp_on_fresh_fs(enabled: bool) -> Iterator[None]:
    """With ``enabled``, every ``tempfile`` directory made inside the block (the MTA's state,
    spool and mailboxes) is on a fresh filesystem; otherwise nothing changes."""
    if not enabled:
        yield
        return
    with fresh_filesystem() as mountpoint:
        old, tempfile.tempdir = tempfile.tempdir, str(mountpoint)
        try:
            yield
        finally:
            tempfile.tempdir = old
