"""The state dir: its lock, the handler records (the journal), and the protocol's files.

Layout (PROTOCOL.md section 3, with `<lib>` = the state dir):

    <state>/Publisher.Type-Version/        handler dirs, as the reference agent lays them out
    <state>/<THUMBPRINT>.crt|.prv          the runtime's certificate (see _crypto)
    <state>/exthandler.log                 the runtime's own log
    <state>/.exthandler/lock               held by the one runtime using this dir
    <state>/.exthandler/handlers/*.json    one record per handler, rewritten after each step
    <state>/.exthandler/instance-view.json the last instance view
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
from pathlib import Path

import aiofiles.os
import attrs
import cattrs
from exthandler_sdk import ExtHandlerError

from ._fs import write_atomic
from ._model import HandlerName, Version
from ._plan import HandlerRecord, HandlerState

__all__ = ["StateDirLockedError", "Store", "read_boot_id"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
SUPPORTED_FEATURES = '[{"Key":"ExtensionTelemetryPipeline","Value":"1.0"}]'


class StateDirLockedError(ExtHandlerError, RuntimeError):
    """Another runtime holds the state dir (the CLI exits 3)."""


def read_boot_id(path: Path = _BOOT_ID) -> str:
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


async def write_file(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """The async face of the one durable-write seam, run off the event loop."""
    await aiofiles.os.wrap(write_atomic)(path, data, mode=mode, durable=durable)


@attrs.define(eq=False)
class Store:
    """One runtime's exclusive hold on a state dir."""

    root: Path
    log_root: Path
    _lock_fd: int | None = None
    _converter: cattrs.Converter = attrs.field(factory=_record_converter)

    @property
    def meta(self) -> Path:
        return self.root / ".exthandler"

    @property
    def records_dir(self) -> Path:
        return self.meta / "handlers"

    @property
    def view_path(self) -> Path:
        return self.meta / "instance-view.json"

    @property
    def log_path(self) -> Path:
        return self.root / "exthandler.log"

    # -- the lock -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Create the layout and take the lock; StateDirLockedError if another runtime has it."""
        for directory in (self.root, self.meta, self.records_dir, self.log_root):
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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- records ----------------------------------------------------------------------------

    def _record_path(self, handler: HandlerName) -> Path:
        return self.records_dir / f"{handler.key}.json"

    def load_records(self) -> dict[HandlerName, HandlerRecord]:
        """Every handler record; an unreadable one is kept aside and reported, not fatal."""
        records: dict[HandlerName, HandlerRecord] = {}
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = self._converter.structure(json.loads(path.read_bytes()), HandlerRecord)
            except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
                path.rename(path.with_suffix(".corrupt"))
                self.log(f"{path}: unreadable record set aside: {exc}")
                continue
            records[record.handler] = record
        return records

    def record_bytes(self, record: HandlerRecord) -> bytes:
        return json.dumps(self._converter.unstructure(record), sort_keys=True).encode()

    async def save_record(self, record: HandlerRecord) -> None:
        """Persist a record durably; a record of nothing at all is deleted instead."""
        path = self._record_path(record.handler)
        if record.empty:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(path)
            return
        await write_file(path, self.record_bytes(record), mode=0o600)

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
        return self.root / f"{handler}-{version}"

    def handler_dir_exists(self, handler: HandlerName, version: Version) -> bool:
        return self.handler_dir(handler, version).is_dir()

    def log_dir(self, handler: HandlerName) -> Path:
        return self.log_root / str(handler)

    def command_log(self, handler: HandlerName) -> Path:
        return self.log_dir(handler) / "CommandExecution.log"

    def events_dir(self, handler: HandlerName) -> Path:
        return self.log_dir(handler) / "events"

    def prepare_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Create config/, status/, the log dirs and HandlerEnvironment.json (idempotent)."""
        directory = self.handler_dir(handler, version)
        for sub in ("config", "status"):
            (directory / sub).mkdir(mode=0o700, exist_ok=True)
            (directory / sub).chmod(0o700)
        self.events_dir(handler).mkdir(parents=True, exist_ok=True)
        self.events_dir(handler).chmod(0o700)
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
        data = json.dumps(environment, indent=2).encode()
        write_atomic(directory / "HandlerEnvironment.json", data)

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
        name = "HandlerState" if extension is None else f"{extension}.HandlerState"
        config = directory / "config"
        if config.is_dir():
            write_atomic(config / name, state.value.encode(), durable=False)

    def remove_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Delete a handler dir (the log dir stays)."""
        directory = self.handler_dir(handler, version)
        if directory.exists():
            # Rename first so that a crash mid-delete never leaves a half dir under the name.
            doomed = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}.removing")
            directory.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def sweep(self) -> None:
        """Remove leftovers of an interrupted extraction or deletion."""
        for leftover in self.root.glob(".*.removing"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(".*.extracting*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # -- the runtime's own log --------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append a line to exthandler.log (never holds settings: callers pass no secrets)."""
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"{stamp} {message}\n")
