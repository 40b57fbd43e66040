"""Where an extension finds things: HandlerEnvironment.json, the protocol's environment
variables, and the one atomic-write helper every file the SDK writes goes through.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ExtHandlerError
from ._protocol import Operation

__all__ = [
    "COMMAND_TIMEOUTS",
    "HandlerEnvironment",
    "HandlerEnvironmentError",
    "ProtocolVariables",
    "load_handler_environment",
    "read_protocol_variables",
    "write_atomic",
]

COMMAND_TIMEOUTS: Mapping[Operation, float] = {
    Operation.INSTALL: 900.0,
    Operation.UPDATE: 900.0,
    Operation.DISABLE: 900.0,
    Operation.ENABLE: 300.0,
    Operation.UNINSTALL: 300.0,
}
"""The reference agent's command timeouts (PROTOCOL.md section 6), in seconds."""

NOT_RUN = "NOT_RUN"
_INTEGER = re.compile(r"[+-]?[0-9]+")


class HandlerEnvironmentError(ExtHandlerError, ValueError):
    """HandlerEnvironment.json or a protocol variable is missing or unusable."""


@attrs.frozen(kw_only=True)
class HandlerEnvironment:
    """The folders the agent gave the handler in `HandlerEnvironment.json`."""

    name: str | None
    log_folder: Path
    config_folder: Path
    status_folder: Path
    heartbeat_file: Path
    events_folder: Path | None


def load_handler_environment(handler_dir: Path) -> HandlerEnvironment:
    """Parse `<handler_dir>/HandlerEnvironment.json` (a JSON array; element 0 counts).

    A UTF-8 BOM is tolerated. Relative folders are taken relative to `handler_dir`.
    `eventsFolder` is optional (older agents do not write it).
    """
    path = handler_dir / "HandlerEnvironment.json"
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            key = (str(path), info.st_ino, info.st_mtime_ns, info.st_size)
            cached = _environments.get(key)
            if cached is not None:  # a runtime running many operations in process
                return cached
            data = file.read()
    except OSError as exc:
        raise HandlerEnvironmentError(f"cannot read {path}: {exc.strerror}") from exc
    environment = _parse_environment(handler_dir, path, data)
    if len(_environments) >= _CACHED_ENVIRONMENTS:
        _environments.clear()
    _environments[key] = environment
    return environment


_CACHED_ENVIRONMENTS = 4096  # a runtime applies a step to every handler before the next
_environments: dict[tuple[str, int, int, int], HandlerEnvironment] = {}


def _parse_environment(handler_dir: Path, path: Path, data: bytes) -> HandlerEnvironment:
    try:
        document: Any = json.loads(data.decode("utf-8-sig"))
    except ValueError as exc:
        raise HandlerEnvironmentError(f"{path}: not UTF-8 JSON ({exc})") from exc
    if isinstance(document, list) and document:
        document = document[0]
    if not isinstance(document, dict) or not isinstance(document.get("handlerEnvironment"), dict):
        raise HandlerEnvironmentError(f"{path}: no handlerEnvironment object in element 0")
    body: dict[str, Any] = document["handlerEnvironment"]

    def folder(key: str, *, required: bool = True) -> Path | None:
        value = body.get(key)
        if isinstance(value, str) and value:
            return handler_dir / value
        if required:
            raise HandlerEnvironmentError(f"{path}: handlerEnvironment.{key}: missing")
        return None

    name = document.get("name")
    log_folder = folder("logFolder")
    config_folder = folder("configFolder")
    status_folder = folder("statusFolder")
    heartbeat = folder("heartbeatFile", required=False)
    assert log_folder is not None
    assert config_folder is not None
    assert status_folder is not None
    return HandlerEnvironment(
        name=name if isinstance(name, str) else None,
        log_folder=log_folder,
        config_folder=config_folder,
        status_folder=status_folder,
        heartbeat_file=heartbeat if heartbeat is not None else handler_dir / "heartbeat.log",
        events_folder=folder("eventsFolder", required=False),
    )


@attrs.frozen(kw_only=True)
class ProtocolVariables:
    """The PROTOCOL.md section 4 variables of one command, typed."""

    sequence_number: int | None
    extension_name: str | None
    handler_version: str | None
    update_to_version: str | None
    updating_from_version: str | None
    disable_exit_code: int | None
    disable_exit_codes: dict[str, int | None]
    uninstall_exit_code: int | None


def _exit_code(value: str | None) -> int | None:
    """An exit-code variable: an integer, or None for `NOT_RUN`, absent or garbage."""
    if value is None or value.strip().upper() == NOT_RUN or not _INTEGER.fullmatch(value.strip()):
        return None
    return int(value)


def _exit_codes(value: str | None) -> dict[str, int | None]:
    """The multi-config JSON `[{"extensionName": .., "exitCode": ".."}]`; junk is skipped."""
    if not value:
        return {}
    try:
        document: Any = json.loads(value)
    except ValueError:
        return {}
    result: dict[str, int | None] = {}
    for entry in document if isinstance(document, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("extensionName"), str):
            code = entry.get("exitCode")
            result[entry["extensionName"]] = _exit_code(
                str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
            )
    return result


def read_protocol_variables(env: Mapping[str, str]) -> ProtocolVariables:
    """Read the section 4 variables from `env`; a non-integer sequence number is an error."""
    seq_text = env.get("ConfigSequenceNumber")
    sequence: int | None = None
    if seq_text is not None and seq_text.strip():
        if not _INTEGER.fullmatch(seq_text.strip()) or int(seq_text) < 0:
            raise HandlerEnvironmentError(
                f"ConfigSequenceNumber must be a non-negative integer, got {seq_text!r}"
            )
        sequence = int(seq_text)
    return ProtocolVariables(
        sequence_number=sequence,
        extension_name=env.get("ConfigExtensionName") or None,
        handler_version=env.get("AZURE_GUEST_AGENT_EXTENSION_VERSION") or None,
        update_to_version=env.get("VERSION") or None,
        updating_from_version=env.get("AZURE_GUEST_AGENT_UPDATING_FROM_VERSION") or None,
        disable_exit_code=_exit_code(env.get("AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE")),
        disable_exit_codes=_exit_codes(
            env.get("AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS")
        ),
        uninstall_exit_code=_exit_code(env.get("AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE")),
    )


def write_atomic(
    path: str | Path,
    data: bytes,
    *,
    mode: int = 0o644,
    durable: bool = True,
    suffix: str = ".tmp",
    parents: bool = True,
    dir_fd: int | None = None,
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
    (a link planted there, say), the file lands in the directory that was opened.
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
            if durable:
                os.fsync(fd)
            if mode & UMASK:  # the umask narrowed the mode given to open(): widen it again
                os.fchmod(fd, mode)
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
