"""The one atomic-write helper every file the SDK writes goes through, and the umask it
works against (the public face is `exthandler_sdk.files`)."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

__all__ = ["UMASK", "fsync_dir", "write_atomic"]


def write_atomic(
    path: str | Path,
    data: bytes,
    *,
    mode: int = 0o644,
    durable: bool = True,
    suffix: str = ".tmp",
    parents: bool = True,
    dir_fd: int | None = None,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a part.

    Temp file in the same directory, fsync, rename, fsync of the directory. Files that are
    rewritten often and only matter while the machine runs (status, heartbeat) pass
    `durable=False`: still atomic, without the fsyncs. The permission bits are `mode`
    whatever the umask. The temp file's name ends in `suffix` (the runtime sweeps its own
    by theirs). A missing directory is created, or with `parents=False` raises
    FileNotFoundError. `path` may be a plain string: callers writing many small files
    save building a Path for each. With `dir_fd`, `path` is a name in that open directory
    and nothing is created on the way: whatever replaces the directory's path meanwhile
    (a link planted there, say), the file lands in the directory that was opened. With
    `owner` (uid, gid), the temp file is chowned through its own descriptor before it
    replaces `path` (this needs the privilege to chown): the file appears with its final
    owner and mode, and no name is ever chowned, so a write into a dir another user
    controls cannot be turned into chowning a file that user linked there.
    """
    path = os.fspath(path)
    # O_EXCL never follows a link; O_NOFOLLOW says so again for the reader.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temp = _temp_name(path, suffix)
    try:
        fd = os.open(temp, flags, mode, dir_fd=dir_fd)
    except FileNotFoundError:
        if not parents or dir_fd is not None:
            raise
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(temp, flags, mode)
    except FileExistsError:  # left by a killed process that had our pid
        temp = _temp_name(path, suffix, os.urandom(8).hex())
        fd = os.open(temp, flags, mode, dir_fd=dir_fd)
    renamed = False
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)
            if mode & UMASK or owner is not None:
                # The umask narrowed the mode given to open(), or chown cleared set-id bits.
                os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        renamed = True
    finally:
        if not renamed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
    if durable:
        if dir_fd is None:
            fsync_dir(os.path.dirname(path) or ".")
        else:
            os.fsync(dir_fd)


_temp_counter = itertools.count()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which races with threads.
UMASK = _current_umask()


def _temp_name(path: str, suffix: str, unique: str | None = None) -> str:
    """A temp name beside `path`, unique within this process and among processes."""
    if unique is None:
        unique = f"{os.getpid()}-{next(_temp_counter)}"
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{unique}{suffix}")


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory's entries: a rename in it is durable only after this. A directory
    that cannot be opened is skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
