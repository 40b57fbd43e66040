"""The store: one runtime's hold on a state dir, as the engine sees it.

A thin facade over its three parts: the state dir with its lock, log and trash
X
(`_handlerdir`). Every durable write goes through `_fs`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from exthandler_sdk.protocol import SUPPORTED_FEATURES as SUPPORTED_FEATURES

from .._model import HandlerName, Version
from .._plan.planner import HandlerRecord, HandlerState
from .handlerdir import HandlerDirs, settings_name, status_name
from .journal import Journal
from .statedir import StateDir

_LOGGER = logging.getLogger("exthandler")
# A library's records go where the host's logging config sends them, and nowhere else (no
# "last resort" printing of warnings on stderr when the host configured nothing).
_LOGGER.addHandler(logging.NullHandler())

__all__ = ["SUPPORTED_FEATURES", "Store"]


class Store:
    """One runtime's exclusive hold on a state dir."""

    root: Path
    log_root: Path
    log_file: Path | None
    log_max_bytes: int
    log_backups: int
    state: StateDir
    journal: Journal
    handlers: HandlerDirs
    # The worker threads file work of this state dir runs in, a few at a time: extraction,
    # tree removal, scans, the journal's fsync (see the threading rule in docs/architecture).
    io_limiter: anyio.CapacityLimiter
    # Lines logged so far (a pass that logged anything was not a quiet one).
    logged: int
    _markers: dict[str, Path]

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
        self.logged = 0
        self._markers = {}
        self.state = StateDir(
            root=self.root,
            log_root=self.log_root,
            log_file=self.log_file,
            log_max_bytes=self.log_max_bytes,
            log_backups=self.log_backups,
        )
        self.io_limiter = anyio.CapacityLimiter(4)
        self.journal = Journal(state=self.state, limiter=self.io_limiter)
        self.handlers = HandlerDirs(state=self.state)

    # -- the state dir (see statedir.py) ------------------------------------------------------

    @property
    def meta(self) -> Path:
        return self.state.meta

    @property
    def view_path(self) -> Path:
        return self.state.view_path

    @property
    def running_dir(self) -> Path:
        return self.state.running_dir

    def marker_path(self, handler: HandlerName) -> Path:
        """Where a running command of `handler` is named (see `run_command`)."""
        path = self._markers.get(handler.key)
        if path is None:  # asked for at every command: built once per handler
            path = self._markers[handler.key] = self.running_dir / f"{handler.key}.json"
        return path

    @property
    def downloads_dir(self) -> Path:
        """The private scratch dir package sources download into."""
        return self.meta / "downloads"

    @property
    def log_path(self) -> Path:
        return self.state.log_path

    @property
    def needs_sweep(self) -> bool:
        return self.state.needs_sweep

    def acquire(self) -> None:
        self.state.acquire()

    def release(self) -> None:
        self.journal.close()
        self.state.release()

    def log(self, message: str, *, level: int = logging.INFO, **fields: object) -> None:
        """A line in exthandler.log, and a record of the stdlib logger `exthandler` with
        `fields` (handler, version, extension, operation) as `extra` attributes."""
        self.logged += 1
        self.state.log(message)
        if _LOGGER.isEnabledFor(level):
            _LOGGER.log(level, "%s", message, extra={k: str(v) for k, v in fields.items()})

    def digest_key(self) -> bytes:
        return self.state.digest_key()

    def sweep(self) -> None:
        self.state.sweep()

    def empty_trash(self) -> None:
        self.state.empty_trash()

    # -- the records (see journal.py) -----------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return self.journal.snapshot_path

    @property
    def journal_path(self) -> Path:
        return self.journal.journal_path

    def load_records(self) -> dict[HandlerName, HandlerRecord]:
        return self.journal.load()

    async def save_record(self, record: HandlerRecord) -> None:
        await self.journal.save(record)

    # -- the handler dirs (see handlerdir.py) ---------------------------------------------------

    settings_name = staticmethod(settings_name)
    status_name = staticmethod(status_name)

    def handler_dir(self, handler: HandlerName, version: Version) -> Path:
        return self.handlers.handler_dir(handler, version)

    def handler_dir_exists(self, handler: HandlerName, version: Version) -> bool:
        return self.handlers.handler_dir_exists(handler, version)

    def log_dir(self, handler: HandlerName) -> Path:
        return self.handlers.log_dir(handler)

    def command_log(self, handler: HandlerName) -> Path:
        return self.handlers.command_log(handler)

    def events_dir(self, handler: HandlerName) -> Path:
        return self.handlers.events_dir(handler)

    def prepare_handler_dir(self, handler: HandlerName, version: Version) -> None:
        self.handlers.prepare_handler_dir(handler, version)

    def write_handler_state(
        self, directory: Path, state: HandlerState, extension: str | None = None
    ) -> None:
        self.handlers.write_handler_state(directory, state, extension)

    def remove_handler_dir(self, handler: HandlerName, version: Version) -> None:
        self.handlers.remove_handler_dir(handler, version)

    def copy_state(self, handler: HandlerName, old: Version, new: Version) -> None:
        self.handlers.copy_state(handler, old, new)
