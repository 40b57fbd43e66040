"""The state dir: its lock, the handler records (the journal), and the protocol's files.

Layout (PROTOCOL.md section 3, with `<lib>` = the state dir):

    <state>/Publisher.Type-Version/        handler dirs, as the reference agent lays them out
    <state>/<THUMBPRINT>.crt|.prv          the runtime's certificate (see _crypto)
    <state>/exthandler.log                 the runtime's own log
    <state>/.exthandler/lock               held by the one runtime using this dir
    <state>/.exthandler/records.json       every handler record, as of the last compaction
    <state>/.exthandler/journal            record changes since, appended after each step
    <state>/.exthandler/instance-view.json the last instance view
    <state>/.exthandler/running/*.json     the process group of each command running now
    <logroot>/Publisher.Type/              CommandExecution.log and events/

Handler records are the source of truth; every other file is derived from them and
rewritten when needed. Records are written durably (see _fs); derived files atomically.

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
import json
import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiofiles.os
import anyio
import attrs
import cattrs
from exthandler_sdk import ExtHandlerError
from exthandler_sdk.protocol import (
    COMMAND_EXECUTION_LOG,
    CONFIG_DIR,
    EVENTS_DIR,
    HANDLER_ENVIRONMENT_NAME,
    HEARTBEAT_NAME,
    MRSEQ_NAME,
    STATUS_DIR,
    HandlerEnvironment,
    HandlerState,
    handler_state_file_name,
    render_handler_environment,
)
from exthandler_sdk.protocol import (
    SUPPORTED_FEATURES as SUPPORTED_FEATURES,  # for exthandler._testing
)

from ._errors import StateDirError
from ._fs import (
    TEMP_SUFFIX,
    UnsafeFileError,
    append_durable,
    copy_regular,
    ensure_dir,
    make_dir,
    make_dirs,
    open_append,
    open_dir,
    read_regular,
    write_atomic,
    write_into,
)
from ._model import HandlerName, Version
from ._plan import HandlerRecord

__all__ = ["BOOT_ID_PATH", "StateDirLockedError", "Store", "read_boot_id"]

OWN_FILE_LIMIT = 1 << 30
"""The most read of one of the runtime's own files (records, journal, view): they hold a
line per handler, and nothing but the runtime writes them; the cap only keeps a planted
device or a runaway file from exhausting memory."""

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")  # the kernel's, per boot
_PUBLIC_DIR_MODE = 0o755  # the state dir, the log root, each handler's log dir
_PRIVATE_DIR_MODE = 0o700  # .exthandler, config/, status/, events/


class StateDirLockedError(ExtHandlerError, RuntimeError):
    """Another runtime holds the state dir (the CLI exits 3)."""


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id; a new one means the machine rebooted."""
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


_NO_LINKS = "a symbolic link; the runtime follows no link in its state dir (remove it)"


def _make_public_dir(path: Path) -> os.stat_result:
    """Create `path` (and parents) 0755 unless it exists; its stat, following a link (the
    state dir or log root given may be one)."""
    make_dirs(path, _PUBLIC_DIR_MODE)
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


def _record_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_unstructure_hook(Version, str)
    converter.register_structure_hook(Version, lambda value, _: Version.parse(value))
    converter.register_unstructure_hook(HandlerName, str)
    converter.register_structure_hook(HandlerName, lambda value, _: HandlerName.parse(value))
    return converter


@attrs.define(eq=False)
class _Batch:
    """Journal lines waiting for the same flush."""

    lines: list[bytes] = attrs.field(factory=list)
    done: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.define(eq=False)
class Store:
    """One runtime's exclusive hold on a state dir."""

    root: Path
    log_root: Path
    _lock_fd: int | None = None
    needs_sweep: bool = attrs.field(default=True, init=False)
    _converter: cattrs.Converter = attrs.field(factory=_record_converter)
    _journal_fd: int | None = None
    _pending: _Batch = attrs.field(factory=lambda: _Batch())
    _flushing: bool = False
    # The HandlerState files written, per handler dir: they are rewritten only on change.
    _written_states: dict[Path, dict[str | None, HandlerState]] = attrs.field(factory=dict)
    _handler_dirs: dict[tuple[HandlerName, Version], Path] = attrs.field(factory=dict)
    _log_dirs: dict[HandlerName, tuple[Path, Path, Path]] = attrs.field(factory=dict)
    # Handler dirs renamed out of the way, deleted by `empty_trash` at the end of a pass.
    _trash: list[Path] = attrs.field(factory=list)

    @property
    def meta(self) -> Path:
        return self.root / ".exthandler"

    @property
    def view_path(self) -> Path:
        return self.meta / "instance-view.json"

    @property
    def running_dir(self) -> Path:
        """Markers of the commands running now (see `_executors.process.end_orphans`)."""
        return self.meta / "running"

    @property
    def log_path(self) -> Path:
        return self.root / "exthandler.log"

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
        try:
            meta_fd = open_dir(self.meta)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # another runtime may be starting too
                os.mkdir(self.meta, _PRIVATE_DIR_MODE)  # the umask may only narrow 0700
            meta_fd = open_dir(self.meta)
        except UnsafeFileError as exc:
            raise StateDirError(f"{self.meta}: {_NO_LINKS}") from exc
        try:
            info = os.fstat(meta_fd)
            _check_owner(self.meta, info)
            if stat.S_IMODE(info.st_mode) != _PRIVATE_DIR_MODE:
                os.fchmod(meta_fd, _PRIVATE_DIR_MODE)
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
        self.empty_trash()
        self._close_journal()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)  # a clean end: nothing to sweep next time
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- records: a snapshot and a group-committed journal ---------------------------------
    #
    # records.json holds every record as of a generation; the journal holds the changes
    # since, one JSON line each, appended and flushed in batches: the steps that finish
    # while a flush is under way share the next one. Loading replays the journal over the
    # snapshot, then compacts: a new snapshot (generation + 1), then a fresh journal with
    # that generation. A journal whose generation is not the snapshot's is already in it
    # (a crash came between the two writes) and is ignored.

    @property
    def snapshot_path(self) -> Path:
        return self.meta / "records.json"

    @property
    def journal_path(self) -> Path:
        return self.meta / "journal"

    def load_records(self) -> dict[HandlerName, HandlerRecord]:
        """Every handler record.

        Records that cannot be read (a damaged records.json, a record that no longer
        structures) are rebuilt from the handler dirs (see `_recover`), never forgotten:
        a forgotten handler would be fetched and installed again over itself.
        """
        snapshot, damaged = self._read_snapshot()
        generation = snapshot.get("generation", 0)
        raw: dict[str, Any] = dict(snapshot.get("records") or {})
        journal = self._journal_bytes()
        lines = self._journal_lines(journal)
        # A damaged snapshot has no generation to match: the journal's whole records are
        # still the newest word on their handlers.
        if lines and (damaged or lines[0].get("generation") == generation):
            for entry in lines[1:]:
                key = entry.get("key")
                if isinstance(key, str):
                    raw[key] = entry.get("record")
        records: dict[HandlerName, HandlerRecord] = {}
        dropped = False
        for key, value in raw.items():
            if value is None:
                continue
            try:
                record = self._converter.structure(value, HandlerRecord)
            except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
                self.log(f"record {key!r} is unreadable: {exc}")
                dropped = True
                continue
            records[record.handler] = record
        if damaged or dropped:
            self._recover(records)
        if snapshot and not dropped and journal == self._journal_header(generation):
            # Nothing happened since the last compaction (a re-apply that ran no step):
            # the snapshot is current and the empty journal goes on as it is.
            if self._journal_fd is None:
                self._journal_fd = self._open_journal()
            return records
        self._compact(records, generation + 1)
        return records

    def _read_snapshot(self) -> tuple[dict[str, Any], bool]:
        """records.json's content, and whether it is damaged (there, but not a snapshot)."""
        path = self.snapshot_path
        try:
            data: Any = json.loads(read_regular(path, OWN_FILE_LIMIT))
        except FileNotFoundError:
            return {}, False
        except (ValueError, RecursionError) as exc:
            problem = f"not valid JSON ({exc})"
        except OSError as exc:
            raise StateDirError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
        else:
            if isinstance(data, dict) and isinstance(data.get("records", {}), dict):
                return data, False
            problem = "not a snapshot of handler records"
        # Kept for whoever wants to know what happened; the records are rebuilt.
        kept = path.with_name(f"{path.name}.damaged")
        with contextlib.suppress(OSError):
            os.replace(path, kept)
        self.log(f"{path} is damaged ({problem}); kept as {kept.name}")
        return {}, True

    def _recover(self, records: dict[HandlerName, HandlerRecord]) -> None:
        """Add a record rebuilt from its handler dir for every handler that has none."""
        from ._recover import rebuild_records
        from ._view import InstanceView

        view = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RecursionError):
            view = InstanceView.from_json(json.loads(read_regular(self.view_path, OWN_FILE_LIMIT)))
        rebuilt = rebuild_records(self.root, skip=set(records), view=view)
        for handler, record in sorted(rebuilt.items(), key=lambda item: item[0].key):
            names = ", ".join(e.name for e in record.extensions) or "no extension"
            self.log(
                f"{handler}: record rebuilt from {handler}-{record.version}: {record.state}"
                f" ({names}); install does not run again, enable runs once more with the"
                " same sequence number"
            )
        records.update(rebuilt)

    def _journal_bytes(self) -> bytes:
        try:
            return read_regular(self.journal_path, OWN_FILE_LIMIT)
        except FileNotFoundError:
            return b""

    @staticmethod
    def _journal_header(generation: int) -> bytes:
        return json.dumps({"generation": generation}).encode() + b"\n"

    def _open_journal(self) -> int:
        return os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    @staticmethod
    def _journal_lines(text: bytes) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line (power loss mid-append): what follows is unusable
            if isinstance(entry, dict):
                lines.append(entry)
        return lines

    def _compact(self, records: Mapping[HandlerName, HandlerRecord], generation: int) -> None:
        """Fold everything into a new snapshot and start an empty journal (both durable)."""
        document = {
            "generation": generation,
            "records": {h.key: self._converter.unstructure(r) for h, r in records.items()},
        }
        path = self.snapshot_path
        try:
            write_atomic(path, json.dumps(document, sort_keys=True).encode(), mode=0o600)
            path = self.journal_path
            write_atomic(path, self._journal_header(generation), mode=0o600)
            self._close_journal()
            self._journal_fd = self._open_journal()
        except OSError as exc:
            raise StateDirError(
                f"{path}: cannot save the handler records: {exc.strerror or exc}"
            ) from exc

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def record_bytes(self, record: HandlerRecord) -> bytes:
        value = None if record.empty else self._converter.unstructure(record)
        entry = {"key": record.handler.key, "record": value}
        return json.dumps(entry, sort_keys=True).encode() + b"\n"

    async def save_record(self, record: HandlerRecord) -> None:
        """Persist a record durably (a record of nothing at all is deleted instead).

        Returns once the record is on disk. Concurrent saves are committed together: the
        first caller flushes whatever is pending, the others wait for that flush.
        """
        batch = self._pending
        batch.lines.append(self.record_bytes(record))
        if self._flushing:
            await batch.done.wait()
            return
        self._flushing = True
        try:
            # Shielded: the waiters depend on this flush, and it is short.
            with anyio.CancelScope(shield=True):
                while self._pending.lines:
                    batch, self._pending = self._pending, _Batch()
                    await self._append(b"".join(batch.lines))
                    batch.done.set()
        finally:
            self._flushing = False

    async def _append(self, data: bytes) -> None:
        if self._journal_fd is None:
            raise RuntimeError("records were not loaded: the journal is not open")
        try:
            await aiofiles.os.wrap(append_durable)(self._journal_fd, data)
        except OSError as exc:
            # Progress that cannot be recorded must not go on: a crash would repeat it.
            raise StateDirError(
                f"{self.journal_path}: cannot record progress: {exc.strerror or exc}"
            ) from exc

    def digest_key(self) -> bytes:
        """A per-state-dir key so that settings digests reveal nothing about secrets."""
        path = self.meta / "digest.key"
        try:
            return read_regular(path, 4096)
        except (FileNotFoundError, UnsafeFileError):  # a link or FIFO there is replaced
            key = secrets.token_bytes(32)
            write_atomic(path, key, mode=0o600)
            return key

    # -- handler dirs and their files -------------------------------------------------------

    def handler_dir(self, handler: HandlerName, version: Version) -> Path:
        key = (handler, version)
        directory = self._handler_dirs.get(key)
        if directory is None:  # asked for many times per step: paths are not free to build
            directory = self._handler_dirs[key] = self.root / f"{handler}-{version}"
        return directory

    def handler_dir_exists(self, handler: HandlerName, version: Version) -> bool:
        return self.handler_dir(handler, version).is_dir()

    def _log_paths(self, handler: HandlerName) -> tuple[Path, Path, Path]:
        paths = self._log_dirs.get(handler)
        if paths is None:
            directory = self.log_root / str(handler)
            paths = (directory, directory / COMMAND_EXECUTION_LOG, directory / EVENTS_DIR)
            self._log_dirs[handler] = paths
        return paths

    def log_dir(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[0]

    def command_log(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[1]

    def events_dir(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[2]

    def prepare_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Create config/, status/, the log dirs and HandlerEnvironment.json (idempotent).

        A link the handler put in place of one of these dirs is replaced by a real dir;
        a link in place of the handler dir itself raises UnsafeFileError.
        """
        directory = self.handler_dir(handler, version)
        self._forget_states(directory)  # a new dir (or a repaired one) has none of them
        data = render_handler_environment(
            HandlerEnvironment(
                name=str(handler),
                log_folder=self.log_dir(handler),
                config_folder=directory / CONFIG_DIR,
                status_folder=directory / STATUS_DIR,
                heartbeat_file=directory / HEARTBEAT_NAME,
                events_folder=self.events_dir(handler),
            )
        )
        fd = open_dir(directory)
        try:
            for sub in (CONFIG_DIR, STATUS_DIR):
                make_dir(sub, _PRIVATE_DIR_MODE, dir_fd=fd)
            # Not flushed: the engine checks it before driving a handler and writes it again
            # if a power loss took it (see Engine._reconcile).
            write_atomic(HANDLER_ENVIRONMENT_NAME, data, durable=False, dir_fd=fd)
        finally:
            os.close(fd)
        log_fd, created = ensure_dir(self.log_dir(handler), _PUBLIC_DIR_MODE)
        try:
            if not created:
                os.fchmod(log_fd, _PUBLIC_DIR_MODE)
            make_dir(EVENTS_DIR, _PRIVATE_DIR_MODE, dir_fd=log_fd)
        finally:
            os.close(log_fd)

    def write_handler_state(
        self, directory: Path, state: HandlerState, extension: str | None = None
    ) -> None:
        """Write `config/HandlerState` (or `config/<ext>.HandlerState`) as the reference does."""
        written = self._written_states.setdefault(directory, {})
        if written.get(extension) == state:
            return  # rewritten after every step, but it seldom changes
        path = f"{directory}/{CONFIG_DIR}/{handler_state_file_name(extension)}"
        if state is HandlerState.NOT_INSTALLED and extension not in written:
            try:
                os.lstat(path)
            except FileNotFoundError:
                # No file reads as NotInstalled (as the reference agent reads it): a handler
                # dir just laid out needs no write.
                written[extension] = state
                return
            except OSError:
                pass
        try:
            self._write_config_file(path, state.value.encode(), mode=0o644)
        except FileNotFoundError:
            return  # no config dir (the handler dir is being removed): nothing to say
        written[extension] = state

    @staticmethod
    def _write_config_file(path: str | Path, data: bytes, *, mode: int) -> None:
        """Write a file of a handler's config/ (not durably): when the handler made config/
        a link, a real dir replaces the link first, so nothing is written where it points."""
        try:
            write_into(path, data, mode=mode, durable=False)
        except UnsafeFileError:
            make_dir(os.path.dirname(path), _PRIVATE_DIR_MODE)
            write_into(path, data, mode=mode, durable=False)

    def _forget_states(self, directory: Path) -> None:
        self._written_states.pop(directory, None)

    def remove_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Take a handler dir away (the log dir stays); its files go at `empty_trash`.

        The rename is the removal: the dir is gone from its name at once, and a crash
        never leaves half a dir under it. The files are deleted at the end of the pass
        because on ext4 without a journal every inode freed now slows each file created
        in the next minutes (the allocator skips recently freed inodes one by one), and a
        pass that upgrades creates many files after it removes the old versions.
        """
        directory = self.handler_dir(handler, version)
        self._forget_states(directory)
        if directory.exists():
            doomed = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}.removing")
            directory.rename(doomed)
            self._trash.append(doomed)

    def copy_state(self, handler: HandlerName, old: Version, new: Version) -> None:
        """Carry the old version's mrseq and status files into the new handler dir.

        Only regular files of at most READ_LIMIT bytes are copied, never through a link
        (nor out of a status/ that is one); whatever is left behind is named in the log.
        Blocking: run it in a worker thread.
        """
        source = self.handler_dir(handler, old)
        with contextlib.ExitStack() as stack:
            try:
                source_fd = open_dir(source)
            except FileNotFoundError:
                return
            except OSError as exc:
                self.log(f"{source}: nothing carried over to {new}: {exc.strerror or exc}")
                return
            stack.callback(os.close, source_fd)
            destination_fd = open_dir(self.handler_dir(handler, new))
            stack.callback(os.close, destination_fd)
            self._carry(MRSEQ_NAME, source_fd, destination_fd, source)
            try:
                status_fd = open_dir(STATUS_DIR, dir_fd=source_fd)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as exc:
                self.log(f"{source / 'status'}: not carried over to {new}: {exc.strerror}")
                return
            stack.callback(os.close, status_fd)
            new_status_fd, _ = ensure_dir(STATUS_DIR, _PRIVATE_DIR_MODE, dir_fd=destination_fd)
            stack.callback(os.close, new_status_fd)
            with os.scandir(status_fd) as scan:
                names = [entry.name for entry in scan if not entry.is_dir(follow_symlinks=False)]
            for name in names:
                self._carry(name, status_fd, new_status_fd, source / STATUS_DIR)

    def _carry(self, name: str, source_fd: int, destination_fd: int, where: Path) -> None:
        try:
            copy_regular(name, source_fd, destination_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.log(f"{where / name}: not carried over: {exc.strerror or exc}")

    def empty_trash(self) -> None:
        """Delete the handler dirs removed since the last call (see `remove_handler_dir`)."""
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
                    _sweep_dir(root_fd, name, CONFIG_DIR)
        finally:
            os.close(root_fd)

    # -- the runtime's own log --------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append a line to exthandler.log, 0600 (never holds settings: callers pass no
        secrets). A link or FIFO in its place is replaced, not written through."""
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # The log must never be what fails a pass (a full disk is reported elsewhere).
        with contextlib.suppress(OSError):
            fd, _ = open_append(self.log_path, 0o600)
            try:
                view = memoryview(f"{stamp} {message}\n".encode("utf-8", "replace"))
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


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
