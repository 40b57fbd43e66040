"""The state dir itself: its layout, the lock, the runtime's own log and the trash.

Layout (the reference agent's `/var/lib/waagent`: docs/protocol.md#on-disk, docs/state-dir.md):

    <state>/Publisher.Type-Version/        handler dirs, as the reference agent lays them out
    <state>/<THUMBPRINT>.crt|.prv          the runtime's certificate (see crypto.py)
    <state>/exthandler.log                 the runtime's own log
    <state>/.exthandler/lock               held by the one runtime using this dir
    <state>/.exthandler/records.json       every handler record, as of the last compaction
    <state>/.exthandler/journal            record changes since, appended after each step
    <state>/.exthandler/instance-view.json the last instance view
    <state>/.exthandler/running/*.json     the process group of each command running now
    <logroot>/Publisher.Type/              CommandExecution.log and events/

Handler records (see journal.py) are the source of truth; every other file is derived from
them and rewritten when needed. Records are written durably (see _fs); derived files
atomically. The handler dirs' files are laid out by handlerdir.py.

Modes are set explicitly, whatever the umask: the state dir, the log root and each
handler's log dir 0755 (extensions' logs are read by administrators, as under
/var/log/azure), `.exthandler`, config/, status/ and events/ 0700, the runtime's own files
and every file holding settings 0600. A state dir or log root that another user owns or
that group or others can write to is refused: whoever can change it can change what runs
as root. Inside handler dirs and log dirs no link is followed (see _fs).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import threading
from pathlib import Path

from .._errors import StateDirError, StateDirLockedError
from .._fs import (
    OWN_FILE_LIMIT,
    TEMP_SUFFIX,
    UnsafeFileError,
    make_dirs,
    open_append,
    open_dir,
    read_regular,
    write_atomic,
)

__all__ = ["OWN_FILE_LIMIT", "PRIVATE_DIR_MODE", "PUBLIC_DIR_MODE", "StateDir"]

PUBLIC_DIR_MODE = 0o755  # the state dir, the log root, each handler's log dir
PRIVATE_DIR_MODE = 0o700  # .exthandler, config/, status/, events/

_NO_LINKS = "a symbolic link; the runtime follows no link in its state dir (remove it)"


def _make_public_dir(path: Path) -> os.stat_result:
    """Create `path` (and parents) 0755 unless it exists; its stat, following a link (the
    state dir or log root given may be one)."""
    make_dirs(path, PUBLIC_DIR_MODE)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"{path}: not a directory")
    return info


def _check_owner(path: Path, info: os.stat_result) -> None:
    """StateDirError unless the runtime's user owns `path`."""
    user = os.geteuid()
    if info.st_uid != user:
        raise StateDirError(
            f"{path}: owned by uid {info.st_uid}, not by uid {user} that runs the runtime"
        )


def _check_owned(path: Path, info: os.stat_result) -> None:
    """StateDirError unless only the runtime's user can change the dir `path`."""
    _check_owner(path, info)
    user = os.geteuid()
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = "group and others" if mode & 0o022 == 0o022 else "group" if mode & 0o020 else "others"
        raise StateDirError(
            f"{path}: writable by {who} (mode {mode:04o}); whoever can change it can change"
            f" what runs as uid {user} (chmod go-w)"
        )


class StateDir:
    """One runtime's exclusive hold on a state dir, and the files that belong to no handler."""

    root: Path
    log_root: Path
    # The runtime's own log (None: `<state dir>/exthandler.log`) and its rotation: past
    # `log_max_bytes` (0: never, logrotate's job) it becomes `.1`, `.1` becomes `.2`... and
    # the oldest beyond `log_backups` is deleted.
    log_file: Path | None
    log_max_bytes: int
    log_backups: int
    _lock_fd: int | None
    _log_lock: threading.Lock
    needs_sweep: bool
    # Handler dirs renamed out of the way, deleted by `empty_trash` at the end of a pass.
    _trash: list[Path]

    # Built once: a pass asks for them several times per step, and paths are not free.
    meta: Path
    view_path: Path
    # Markers of the commands running now (see `_executors._orphans.end_orphans`).
    running_dir: Path

    def __init__(
        self,
        root: Path,
        log_root: Path,
        log_file: Path | None = None,
        log_max_bytes: int = 10 << 20,
        log_backups: int = 5,
    ) -> None:
        self.root = root
        self.log_root = log_root
        self.log_file = log_file
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self._lock_fd = None
        self._log_lock = threading.Lock()
        self.needs_sweep = True
        self._trash = []
        self.meta = self.root / ".exthandler"
        self.view_path = self.meta / "instance-view.json"
        self.running_dir = self.meta / "running"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.root / "exthandler.log"

    # -- the lock -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Create the layout and take the lock; StateDirLockedError if another runtime has it.

        StateDirError (one line, `path: reason`) when the state dir or the log root cannot
        be used: not a dir, not creatable, read-only, owned by another user, or writable by
        group or others. Missing dirs are created with their modes (see the module doc).
        The lock file is never a link or anything but a regular file: such a thing there is
        refused rather than removed, since a second runtime removing it meanwhile would
        remove the first one's lock.
        """
        try:
            self._acquire()
        except (StateDirError, StateDirLockedError):
            raise
        except OSError as exc:
            path = exc.filename or self.root
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StateDirError(f"{path}: {reason}") from exc

    def _acquire(self) -> None:
        for directory in (self.root, self.log_root):
            _check_owned(directory, _make_public_dir(directory))
        if self.log_file is not None:  # a log elsewhere must be writable from the start
            fd, _ = open_append(self.log_file, 0o600)
            os.close(fd)
        try:
            meta_fd = open_dir(self.meta)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # another runtime may be starting too
                os.mkdir(self.meta, PRIVATE_DIR_MODE)  # the umask may only narrow 0700
            meta_fd = open_dir(self.meta)
        except UnsafeFileError as exc:
            raise StateDirError(f"{self.meta}: {_NO_LINKS}") from exc
        try:
            info = os.fstat(meta_fd)
            _check_owner(self.meta, info)
            if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
                os.fchmod(meta_fd, PRIVATE_DIR_MODE)
            fd = self._open_lock(meta_fd)
        finally:
            os.close(meta_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            except OSError:  # pragma: no cover - the file was just opened
                holder = "unknown"
            finally:
                os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StateDirLockedError(
                f"{self.root}: another exthandler runtime (pid {holder}) holds this state dir"
            ) from exc
        # The lock file names its holder while held and is emptied by a clean release: a
        # name left in it means the last runtime was killed, and its leftovers need a sweep.
        try:
            self.needs_sweep = bool(os.pread(fd, 64, 0).strip())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)  # the lock goes with it
            raise StateDirError(f"{self.meta / 'lock'}: {exc.strerror or exc}") from exc
        self._lock_fd = fd

    def _open_lock(self, meta_fd: int) -> int:
        """The lock file, opened in `.exthandler`: a regular file, or StateDirError."""
        path = self.meta / "lock"
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open("lock", flags, 0o600, dir_fd=meta_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateDirError(f"{path}: {_NO_LINKS}") from exc
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StateDirError(f"{path}: not a regular file; remove it")
        return fd

    def release(self) -> None:
        """Empty the trash and drop the lock, marking the end as clean."""
        self.empty_trash()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)  # a clean end: nothing to sweep next time
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def digest_key(self) -> bytes:
        """A per-state-dir key so that settings digests reveal nothing about secrets."""
        path = self.meta / "digest.key"
        try:
            return read_regular(path, 4096)
        except (FileNotFoundError, UnsafeFileError):  # a link or FIFO there is replaced
            key = os.urandom(32)
            write_atomic(path, key, mode=0o600)
            return key

    # -- the trash and the sweep -------------------------------------------------------------

    def trash(self, directory: Path) -> None:
        """Rename `directory` out of the way now; its files go at `empty_trash`.

        The rename is the removal: the dir is gone from its name at once, and a crash
        never leaves half a dir under it. The files are deleted at the end of the pass
        because on ext4 without a journal every inode freed now slows each file created
        in the next minutes (the allocator skips recently freed inodes one by one), and a
        pass that upgrades creates many files after it removes the old versions.
        """
        if directory.exists():
            doomed = directory.with_name(f".{directory.name}.{os.urandom(4).hex()}.removing")
            directory.rename(doomed)
            self._trash.append(doomed)

    def empty_trash(self) -> None:
        """Delete the handler dirs removed since the last call (see `trash`)."""
        while self._trash:
            _remove_tree(self._trash.pop())

    def sweep(self) -> None:
        """Remove leftovers of an interrupted extraction, deletion or write of ours.

        Never descends into a link: a handler dir or config/ that is one is skipped.
        """
        self.needs_sweep = False
        # Opened following a link: the state dir itself may be one its administrator made.
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with os.scandir(root_fd) as scan:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
            _remove_temp_files(root_fd)
            for name, is_dir in entries:
                if name.startswith(".") and (name.endswith(".removing") or ".extracting" in name):
                    _remove_tree(self.root / name)
                elif is_dir and name == self.meta.name:
                    _sweep_dir(root_fd, name)
                elif is_dir and "-" in name:
                    _sweep_dir(root_fd, name, "config")
        finally:
            os.close(root_fd)

    # -- the runtime's own log --------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append a line to exthandler.log, 0600 (never holds settings: callers pass no
        secrets). A link or FIFO in its place is replaced, not written through. The file
        is opened for each line: one moved away (logrotate) is followed by a new one at
        once. A line that would take it past `log_max_bytes` rotates it first."""
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        data = f"{stamp} {message}\n".encode("utf-8", "replace")
        # The log must never be what fails a pass (a full disk is reported elsewhere).
        with contextlib.suppress(OSError):
            fd, size = open_append(self.log_path, 0o600)
            if self.log_max_bytes and size and size + len(data) > self.log_max_bytes:
                os.close(fd)
                with self._log_lock:
                    fd, size = open_append(self.log_path, 0o600)
                    if size and size + len(data) > self.log_max_bytes:
                        os.close(fd)
                        self._rotate_log()
                        fd, _ = open_append(self.log_path, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    def _rotate_log(self) -> None:
        """`exthandler.log` becomes `.1`, each `.N` becomes `.N+1`; past `log_backups`
        the oldest is deleted (renames never follow a link: they move the name)."""
        path = self.log_path
        for number in range(self.log_backups, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            newer = path if number == 1 else path.with_name(f"{path.name}.{number - 1}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(newer, older)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # with no backups kept (with backups, already renamed)


def _remove_tree(path: Path) -> None:
    """Delete a dir of ours (a link in its place is removed, never followed)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _sweep_dir(parent_fd: int, name: str, nested: str | None = None) -> None:
    """Delete our temp files in the dir `name` (and its dir `nested`), unless it is a link."""
    try:
        fd = open_dir(name, dir_fd=parent_fd)
    except OSError:  # gone, a link, not a dir: nothing of ours in it
        return
    try:
        _remove_temp_files(fd)
        if nested is not None:
            _sweep_dir(fd, nested)
    finally:
        os.close(fd)


def _remove_temp_files(dir_fd: int) -> None:
    """Delete the runtime's temp files (`.*<TEMP_SUFFIX>`) in an open dir."""
    with os.scandir(dir_fd) as scan:
        names = [e.name for e in scan if e.name.startswith(".") and e.name.endswith(TEMP_SUFFIX)]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
