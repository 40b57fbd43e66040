"""The runtime's file I/O seam: durable writes, and files it must not trust.

Writes: temp file, fsync, rename, fsync of the dir. A reader never sees a half-written
file, and after a crash a file is either its old or its new content. Everything in the
runtime that must survive kill -9 goes through here.

Handler dirs and log dirs are writable by the handlers, which run as the runtime's own
user: anything there may be a link, a FIFO or a huge file planted to make the runtime do
damage for them. Files there are read with `open_regular`/`read_regular` (no link
followed, never blocking, at most `READ_LIMIT` bytes), dirs are opened with `open_dir`
or made with `ensure_dir`/`make_dir` (a link in the way is replaced, never followed),
and files are written with `dir_fd=` into a dir opened that way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from exthandler_sdk.files import UMASK
from exthandler_sdk.files import write_atomic as _write_atomic
from exthandler_sdk.protocol import READ_LIMIT

__all__ = [
    "OWN_FILE_LIMIT",
    "INLINE_LIMIT",
    "READ_LIMIT",
    "TEMP_SUFFIX",
    "RegularFile",
    "UnsafeFileError",
    "append_durable",
    "copy_regular",
    "ensure_dir",
    "make_dir",
    "make_dirs",
    "open_append",
    "open_dir",
    "open_regular",
    "read_regular",
    "write_atomic",
    "write_into",
    "write_unless_same",
]

OWN_FILE_LIMIT = 1 << 30
"""The most read of one of the runtime's own files (records, journal, view): they hold a
line per handler, and nothing but the runtime writes them; the cap only keeps a planted
device or a runaway file from exhausting memory."""

# Files up to this size are read, copied or extracted on the event loop: a worker thread
# costs a hand-off and holds the interpreter lock for most of such work anyway. Larger
# ones go to a thread, where hashing, copying and inflating let the loop run.
INLINE_LIMIT = 256 * 1024

# READ_LIMIT (protocol): the most the runtime reads of any file a handler can write (status,
# heartbeat, manifest, state carried over in an upgrade); a larger one is refused unread.

# The runtime's temporary files end so, and only they are swept after a crash: an
# extension may be writing temporary files of its own at that moment.
TEMP_SUFFIX = ".exthandler-tmp"

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
# How often a dir replaced under us (a link put back as soon as it is removed) is retried.
_ATTEMPTS = 3

PathArg = str | Path


class UnsafeFileError(OSError):
    """A path the runtime will not use as it is: a link, not a regular file (or not a
    dir), or larger than the limit. `reason` says which, in words; so does `strerror`."""

    def __init__(self, path: PathArg, reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, reason, os.fspath(path))
        self.reason = reason


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _link_error(path: PathArg) -> UnsafeFileError:
    return UnsafeFileError(path, "a symbolic link, not followed", errno.ELOOP)


def _too_large(path: PathArg, cap: int) -> UnsafeFileError:
    return UnsafeFileError(path, f"larger than {cap} bytes", errno.EFBIG)


class RegularFile:
    """A regular file opened without following a link and without blocking.

    `size` is known before a byte is read, so that a caller on the event loop reads a
    file of up to `INLINE_LIMIT` bytes itself and hands a larger one to a worker thread.
    """

    __slots__ = ("fd", "info", "path")

    def __init__(self, fd: int, info: os.stat_result, path: PathArg) -> None:
        self.fd = fd
        self.info = info
        self.path = path

    @property
    def size(self) -> int:
        return self.info.st_size

    def read(self, cap: int = READ_LIMIT) -> bytes:
        """The whole file; UnsafeFileError (unread) if it holds, or grows to, over `cap` bytes."""
        if self.info.st_size > cap:
            raise _too_large(self.path, cap)
        chunks: list[bytes] = []
        left = cap + 1
        want = self.info.st_size + 1  # one more: a file growing meanwhile shows itself
        while left > 0:
            chunk = os.read(self.fd, min(want, left))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            want = 64 * 1024
        if left <= 0:
            raise _too_large(self.path, cap)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> RegularFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_regular(path: PathArg, *, dir_fd: int | None = None) -> RegularFile:
    """Open a file a handler could have planted: the one way to read handler-dir files.

    `O_NOFOLLOW | O_NONBLOCK`, then `fstat`: a link, a FIFO, a device or a dir raises
    UnsafeFileError (a missing file FileNotFoundError), and opening never blocks. Reading
    is the caller's: on the event loop only when `size <= INLINE_LIMIT`, else in a worker
    thread, and never past a cap (`RegularFile.read`). With `dir_fd`, `path` is a name in
    that open directory.
    """
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFileError(path, f"{_kind(info.st_mode)}, not a regular file")
    return RegularFile(fd, info, path)


def read_regular(path: PathArg, cap: int = READ_LIMIT, *, dir_fd: int | None = None) -> bytes:
    """`open_regular(path).read(cap)`: the bytes of a regular file of at most `cap` bytes.

    See `open_regular` for what raises. On the event loop, use it only for files that
    are small by protocol, or check `open_regular(...).size` first.
    """
    with open_regular(path, dir_fd=dir_fd) as file:
        return file.read(cap)


def open_dir(path: PathArg, *, dir_fd: int | None = None) -> int:
    """An `O_DIRECTORY` fd on `path`, whose last component must not be a link.

    A link raises UnsafeFileError, anything else that is not a dir NotADirectoryError, a
    missing dir FileNotFoundError. The caller closes the fd.
    """
    try:
        return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        # O_DIRECTORY | O_NOFOLLOW gives ENOTDIR for a link too: tell the two apart.
        if stat.S_ISLNK(os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise _link_error(path) from None
        raise


def make_dirs(path: PathArg, mode: int = 0o755) -> None:
    """Create `path` and its missing parents, each with exactly `mode` (whatever the
    umask); dirs that exist are left as they are (links in the path are followed)."""
    path = Path(path)
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        if mode & UMASK:
            os.chmod(directory, mode)


def ensure_dir(
    path: PathArg, mode: int, *, dir_fd: int | None = None, parents_mode: int = 0o755
) -> tuple[int, bool]:
    """An fd on the dir `path` and whether it was created, with exactly `mode`, just now.

    A link at `path` is removed and a real dir made in its place: a handler must not make
    the runtime create, chmod or write things where the link points. A file in the way
    raises FileExistsError. Missing parents are made with `parents_mode` (not with
    `dir_fd`, where the parent is the open dir). An existing dir keeps its mode.
    """
    for _ in range(_ATTEMPTS):
        try:
            return open_dir(path, dir_fd=dir_fd), False
        except FileNotFoundError:
            pass
        except UnsafeFileError:
            os.unlink(path, dir_fd=dir_fd)  # a link: removed, not followed
        except NotADirectoryError:
            raise FileExistsError(
                errno.EEXIST, "exists and is not a directory", os.fspath(path)
            ) from None
        try:
            os.mkdir(path, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue  # made meanwhile: open it again
        except FileNotFoundError:
            if dir_fd is not None:
                raise
            make_dirs(Path(path).parent, parents_mode)
            os.mkdir(path, mode)
        try:
            fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # replaced between mkdir and open: start again
        if mode & UMASK:  # the umask narrowed the mode given to mkdir(): widen it again
            os.fchmod(fd, mode)
        return fd, True
    raise UnsafeFileError(path, "keeps being replaced by something else than a directory")


def make_dir(path: PathArg, mode: int = 0o700, *, dir_fd: int | None = None) -> None:
    """Create `path` (and its parents, 0755) with exactly `mode`; an existing dir gets
    `mode` too, and a link in its place is replaced by a dir (see `ensure_dir`)."""
    if not mode & UMASK:
        # The common case, one syscall: a dir made just now, where nothing was, already
        # has exactly `mode` (the umask takes none of its bits), and nothing is opened.
        try:
            os.mkdir(path, mode, dir_fd=dir_fd)
        except (FileExistsError, FileNotFoundError):
            pass  # something is there, or a parent is missing: the general way below
        else:
            return
    os.close(mode_dir(path, mode, dir_fd=dir_fd))


def mode_dir(path: PathArg, mode: int = 0o700, *, dir_fd: int | None = None) -> int:
    """`make_dir`, returning an fd on the dir (for writes into it that no link planted at
    its path can redirect)."""
    fd, created = ensure_dir(path, mode, dir_fd=dir_fd)
    try:
        if not created:
            os.fchmod(fd, mode)  # made by someone else: its mode is unknown
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(
    path: PathArg,
    data: bytes,
    *,
    mode: int = 0o644,
    durable: bool = True,
    dir_fd: int | None = None,
) -> None:
    """Replace `path` with `data` atomically, with permission bits `mode` from the start.

    The SDK's write, with the runtime's temp suffix (the sweep after a crash looks for it)
    and no directory created on the way: a missing one raises FileNotFoundError.
    `durable=False` skips the fsyncs for files that may be lost in a crash. With `dir_fd`
    (from `open_dir`), `path` is a name in that dir: a link planted at that name is
    replaced by the rename, never written through.
    """
    _write_atomic(
        path, data, mode=mode, durable=durable, suffix=TEMP_SUFFIX, parents=False, dir_fd=dir_fd
    )


def write_into(path: PathArg, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """`write_atomic` into a dir a handler can write to: the dir of `path` must not be a
    link (UnsafeFileError) and is the one written into even if it is replaced meanwhile."""
    directory, name = os.path.split(os.fspath(path))
    fd = open_dir(directory or ".")
    try:
        write_atomic(name, data, mode=mode, durable=durable, dir_fd=fd)
    finally:
        os.close(fd)


def write_unless_same(
    path: PathArg, data: bytes, *, mode: int = 0o644, dir_fd: int | None = None
) -> None:
    """`write_into(durable=False)`, skipped when `path` already holds `data` with `mode`.

    For files derived again on every pass (settings): replacing a file frees an inode,
    and on ext4 without a journal each inode freed slows every file created in the next
    minutes, because the allocator steps over recently freed inodes one at a time. With
    `dir_fd` (from `open_dir` or `mode_dir`), `path` is a name in that dir.
    """
    if dir_fd is not None:
        _write_unless_same(os.fspath(path), data, mode, dir_fd)
        return
    directory, name = os.path.split(os.fspath(path))
    fd = open_dir(directory or ".")
    try:
        _write_unless_same(name, data, mode, fd)
    finally:
        os.close(fd)


def _write_unless_same(name: str, data: bytes, mode: int, fd: int) -> None:
    try:
        with open_regular(name, dir_fd=fd) as existing:
            if (
                existing.size == len(data)
                and existing.info.st_mode & 0o777 == mode
                and existing.read(len(data)) == data
            ):
                return
    except OSError:
        pass  # missing, or not a regular file: replaced below
    write_atomic(name, data, mode=mode, durable=False, dir_fd=fd)


def copy_regular(name: str, source_fd: int, destination_fd: int, *, cap: int = READ_LIMIT) -> None:
    """Copy the regular file `name` between two open dirs, keeping its mode and mtime.

    Never through a link, never more than `cap` bytes (UnsafeFileError otherwise); the
    copy replaces whatever was at `name` in the destination. Blocking: run it in a thread.
    """
    with open_regular(name, dir_fd=source_fd) as source:
        data = source.read(cap)
        info = source.info
    write_atomic(name, data, mode=info.st_mode & 0o777, durable=False, dir_fd=destination_fd)
    os.utime(
        name,
        ns=(info.st_atime_ns, info.st_mtime_ns),
        dir_fd=destination_fd,
        follow_symlinks=False,
    )


def open_append(path: PathArg, mode: int, *, dir_fd: int | None = None) -> tuple[int, int]:
    """An `O_APPEND` fd on the log file `path`, and its size; created with `mode` if missing.

    A link, FIFO or other non-regular file in its place is removed and a new file made:
    appending never writes through a link nor blocks. An existing file gets `mode` (one
    made under a loose umask may be writable by anyone).
    """
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, _APPEND_FLAGS, mode, dir_fd=dir_fd)
        except OSError as exc:
            # ELOOP: a link. ENXIO: a FIFO nobody reads. Both are removed below.
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            os.unlink(path, dir_fd=dir_fd)
            continue
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            os.unlink(path, dir_fd=dir_fd)
            continue
        if info.st_mode & 0o777 != mode:
            os.fchmod(fd, mode)
        return fd, info.st_size
    raise UnsafeFileError(path, "keeps being replaced by something else than a regular file")


def append_durable(fd: int, data: bytes) -> None:
    """Append `data` to an O_APPEND file and flush it to disk (a journal's group commit)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fdatasync(fd)
