"""The one place durable files are written: temp file, fsync, rename, fsync of the dir.

A reader never sees a half-written file, and after a crash a file is either its old or
its new content. Everything in the runtime that must survive kill -9 goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from exthandler_sdk._environment import UMASK
from exthandler_sdk._environment import write_atomic as _write_atomic

__all__ = [
    "INLINE_LIMIT",
    "TEMP_SUFFIX",
    "append_durable",
    "make_dir",
    "write_atomic",
    "write_unless_same",
]

# Files up to this size are read, copied or extracted on the event loop: a worker thread
# costs a hand-off and holds the interpreter lock for most of such work anyway. Larger
# ones go to a thread, where hashing, copying and inflating let the loop run.
INLINE_LIMIT = 256 * 1024

# The runtime's temporary files end so, and only they are swept after a crash: an
# extension may be writing temporary files of its own at that moment.
TEMP_SUFFIX = ".exthandler-tmp"


def make_dir(path: Path, mode: int = 0o700) -> None:
    """Create `path` (and its parents) with exactly `mode`; an existing dir gets `mode` too."""
    try:
        os.mkdir(path, mode)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        os.chmod(path, mode)  # made by someone else: its mode is unknown
        return
    if mode & UMASK:  # the umask narrowed the mode given to mkdir(): widen it again
        os.chmod(path, mode)


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` atomically, with permission bits `mode` from the start.

    The SDK's write, with the runtime's temp suffix (the sweep after a crash looks for it)
    and no directory created on the way: a missing one raises FileNotFoundError.
    `durable=False` skips the fsyncs for files that may be lost in a crash.
    """
    _write_atomic(path, data, mode=mode, durable=durable, suffix=TEMP_SUFFIX, parents=False)


def write_unless_same(path: str | Path, data: bytes, *, mode: int = 0o644) -> None:
    """`write_atomic(durable=False)`, skipped when `path` already holds `data` with `mode`.

    For files derived again on every pass (settings): replacing a file frees an inode,
    and on ext4 without a journal each inode freed slows every file created in the next
    minutes, because the allocator steps over recently freed inodes one at a time.
    """
    try:
        with open(path, "rb") as existing:
            same_mode = os.fstat(existing.fileno()).st_mode & 0o777 == mode
            if same_mode and existing.read(len(data) + 1) == data:
                return
    except OSError:
        pass
    write_atomic(path, data, mode=mode, durable=False)


def append_durable(fd: int, data: bytes) -> None:
    """Append `data` to an O_APPEND file and flush it to disk (a journal's group commit)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fdatasync(fd)
