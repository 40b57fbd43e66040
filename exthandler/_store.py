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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiofiles.os
import anyio
import attrs
import cattrs
from exthandler_sdk import ExtHandlerError

from ._errors import StateDirError
from ._fs import TEMP_SUFFIX, append_durable, make_dir, write_atomic
from ._model import HandlerName, Version
from ._plan import HandlerRecord, HandlerState

__all__ = ["BOOT_ID_PATH", "StateDirLockedError", "Store", "read_boot_id"]

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")  # the kernel's, per boot
SUPPORTED_FEATURES = '[{"Key":"ExtensionTelemetryPipeline","Value":"1.0"}]'


class StateDirLockedError(ExtHandlerError, RuntimeError):
    """Another runtime holds the state dir (the CLI exits 3)."""


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id; a new one means the machine rebooted."""
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


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
        """Create the layout and take the lock; StateDirLockedError if another runtime has it."""
        for directory in (self.root, self.meta, self.log_root):
            directory.mkdir(parents=True, exist_ok=True)
        self.meta.chmod(0o700)
        lock_path = self.meta / "lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = lock_path.read_text().strip() or "unknown"
            except OSError:  # pragma: no cover - the file was just opened
                holder = "unknown"
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
            raise StateDirError(f"{lock_path}: {exc.strerror or exc}") from exc
        self._lock_fd = fd

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
            data: Any = json.loads(path.read_bytes())
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
            view = InstanceView.from_json(json.loads(self.view_path.read_bytes()))
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
            return self.journal_path.read_bytes()
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
            return path.read_bytes()
        except FileNotFoundError:
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
            paths = (directory, directory / "CommandExecution.log", directory / "events")
            self._log_dirs[handler] = paths
        return paths

    def log_dir(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[0]

    def command_log(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[1]

    def events_dir(self, handler: HandlerName) -> Path:
        return self._log_paths(handler)[2]

    def prepare_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Create config/, status/, the log dirs and HandlerEnvironment.json (idempotent)."""
        directory = self.handler_dir(handler, version)
        self._forget_states(directory)  # a new dir (or a repaired one) has none of them
        for sub in ("config", "status"):
            make_dir(directory / sub)
        make_dir(self.events_dir(handler))
        environment = [
            {
                "name": str(handler),
                "version": 1.0,
                "handlerEnvironment": {
                    "logFolder": str(self.log_dir(handler)),
                    "configFolder": str(directory / "config"),
                    "statusFolder": str(directory / "status"),
                    "heartbeatFile": str(directory / "heartbeat.log"),
                    "eventsFolder": str(self.events_dir(handler)),
                    "eventsFolder_preview": str(self.events_dir(handler)),
                },
            }
        ]
        data = json.dumps(environment).encode()
        # Not flushed: the engine checks it before driving a handler and writes it again
        # if a power loss took it (see Engine._reconcile).
        write_atomic(directory / "HandlerEnvironment.json", data, durable=False)

    @staticmethod
    def settings_name(extension: str | None, sequence: int) -> str:
        return f"{sequence}.settings" if extension is None else f"{extension}.{sequence}.settings"

    @staticmethod
    def status_name(extension: str | None, sequence: int) -> str:
        return f"{sequence}.status" if extension is None else f"{extension}.{sequence}.status"

    def write_handler_state(
        self, directory: Path, state: HandlerState, extension: str | None = None
    ) -> None:
        """Write `config/HandlerState` (or `config/<ext>.HandlerState`) as the reference does."""
        written = self._written_states.setdefault(directory, {})
        if written.get(extension) == state:
            return  # rewritten after every step, but it seldom changes
        name = "HandlerState" if extension is None else f"{extension}.HandlerState"
        path = f"{directory}/config/{name}"
        if state is HandlerState.NOT_INSTALLED and extension not in written:
            try:
                os.stat(path)
            except FileNotFoundError:
                # No file reads as NotInstalled (as the reference agent reads it): a handler
                # dir just laid out needs no write.
                written[extension] = state
                return
            except OSError:
                pass
        try:
            write_atomic(path, state.value.encode(), durable=False)
        except FileNotFoundError:
            return  # no config dir (the handler dir is being removed): nothing to say
        written[extension] = state

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

    def empty_trash(self) -> None:
        """Delete the handler dirs removed since the last call (see `remove_handler_dir`)."""
        while self._trash:
            shutil.rmtree(self._trash.pop(), ignore_errors=True)

    def sweep(self) -> None:
        """Remove leftovers of an interrupted extraction, deletion or write of ours."""
        self.needs_sweep = False
        for leftover in self.root.glob(".*.removing"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(".*.extracting*"):
            shutil.rmtree(leftover, ignore_errors=True)
        pattern = f".*{TEMP_SUFFIX}"
        places = [self.root, self.meta, *self.root.glob("*-*/config"), *self.root.glob("*-*")]
        for place in places:
            for leftover in place.glob(pattern):
                leftover.unlink(missing_ok=True)

    # -- the runtime's own log --------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append a line to exthandler.log (never holds settings: callers pass no secrets)."""
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # The log must never be what fails a pass (a full disk is reported elsewhere).
        with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"{stamp} {message}\n")
