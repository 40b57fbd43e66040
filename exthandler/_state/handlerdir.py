"""Handler dirs and their log dirs: laying them out, HandlerState, carrying state over.

The protocol's files of each handler (docs/protocol.md#on-disk): `HandlerEnvironment.json`,
config/, status/, `config/HandlerState`, and the log dir with CommandExecution.log and
events/. Nothing in these dirs is trusted: the handler can write there, so no link is
followed and every dir and file gets its mode (see _fs.py and statedir.py).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

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
    settings_file_name,
    status_file_name,
)

from .._fs import (
    UnsafeFileError,
    copy_regular,
    ensure_dir,
    make_dir,
    open_dir,
    write_atomic,
    write_into,
)
from .._model import HandlerName, Version
from .statedir import PRIVATE_DIR_MODE, PUBLIC_DIR_MODE, StateDir

__all__ = ["HandlerDirs", "settings_name", "status_name"]


# The protocol's names, for the callers that used to find them here.
settings_name = settings_file_name
status_name = status_file_name


class HandlerDirs:
    """The handler dirs and log dirs of a state dir, and what the runtime wrote in them."""

    state: StateDir
    # The HandlerState files written, per handler dir: they are rewritten only on change.
    _written_states: dict[Path, dict[str | None, HandlerState]]
    _handler_dirs: dict[tuple[HandlerName, Version], Path]
    _log_dirs: dict[HandlerName, tuple[Path, Path, Path]]

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._written_states = {}
        self._handler_dirs = {}
        self._log_dirs = {}

    def handler_dir(self, handler: HandlerName, version: Version) -> Path:
        key = (handler, version)
        directory = self._handler_dirs.get(key)
        if directory is None:  # asked for many times per step: paths are not free to build
            directory = self._handler_dirs[key] = self.state.root / f"{handler}-{version}"
        return directory

    def handler_dir_exists(self, handler: HandlerName, version: Version) -> bool:
        return self.handler_dir(handler, version).is_dir()

    def _log_paths(self, handler: HandlerName) -> tuple[Path, Path, Path]:
        paths = self._log_dirs.get(handler)
        if paths is None:
            directory = self.state.log_root / str(handler)
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
                make_dir(sub, PRIVATE_DIR_MODE, dir_fd=fd)
            # Not flushed: the engine checks it before driving a handler and writes it again
            # if a power loss took it (see Engine._reconcile).
            write_atomic(HANDLER_ENVIRONMENT_NAME, data, durable=False, dir_fd=fd)
        finally:
            os.close(fd)
        log_fd, created = ensure_dir(self.log_dir(handler), PUBLIC_DIR_MODE)
        try:
            if not created:
                os.fchmod(log_fd, PUBLIC_DIR_MODE)
            make_dir(EVENTS_DIR, PRIVATE_DIR_MODE, dir_fd=log_fd)
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
            make_dir(os.path.dirname(path), PRIVATE_DIR_MODE)
            write_into(path, data, mode=mode, durable=False)

    def _forget_states(self, directory: Path) -> None:
        self._written_states.pop(directory, None)

    def remove_handler_dir(self, handler: HandlerName, version: Version) -> None:
        """Take a handler dir away (the log dir stays); its files go at the end of the pass
        (see `StateDir.trash`)."""
        directory = self.handler_dir(handler, version)
        self._forget_states(directory)
        self.state.trash(directory)

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
                self.state.log(f"{source}: nothing carried over to {new}: {exc.strerror or exc}")
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
                self.state.log(f"{source / 'status'}: not carried over to {new}: {exc.strerror}")
                return
            stack.callback(os.close, status_fd)
            new_status_fd, _ = ensure_dir(STATUS_DIR, PRIVATE_DIR_MODE, dir_fd=destination_fd)
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
            self.state.log(f"{where / name}: not carried over: {exc.strerror or exc}")
