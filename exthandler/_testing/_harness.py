"""`exthandler_harness`: one operation of one SDK handler class, as an agent would run it.

The harness lays out a handler dir under its root exactly as an agent does (a
`HandlerEnvironment.json`, `config/` and `status/` at 0700, a log folder with an events
folder), writes the settings file with the protected settings encrypted to a certificate
in the root (the session's, so no key is generated per test), sets the protocol variables
and calls the SDK's `run_operation`, the function a packaged handler's command runs. It
then collects what the handler produced: its status, heartbeat, events, log and files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
from exthandler_sdk import Handler, Operation, run_operation
from exthandler_sdk.protocol import (
    CONFIG_DIR,
    EVENTS_DIR,
    HANDLER_ENVIRONMENT_NAME,
    HEARTBEAT_NAME,
    NOT_RUN,
    STATUS_DIR,
    SUPPORTED_FEATURES,
    HandlerEnvironment,
    Variable,
    render_handler_environment,
    render_settings,
    settings_file_name,
    status_file_name,
)

from .._state.crypto import Certificate, encrypt_protected_settings
from ._certs import seed_certificate
from ._loop import check_backend, run_blocking
from ._validate import validate_heartbeat, validate_status

__all__ = ["Harness", "HarnessResult", "Status", "SubstatusEntry", "plain"]

_LOG_TAIL = 2000


def plain(value: Any) -> Any:
    """Settings as JSON-ready data: attrs instances become dicts, the rest is kept."""
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return value


@attrs.frozen(kw_only=True)
class SubstatusEntry:
    """One entry of `status.substatus`, read leniently (see `Status`)."""

    name: str
    status: str
    code: int
    message: str


@attrs.frozen(kw_only=True)
class Status:
    """The top-level fields of a status file's element 0, read leniently.

    Missing or mistyped fields read as "" (or 0): whether the file is valid is what
    `HarnessResult.assert_valid_status()` says.
    """

    status: str
    code: int
    message: str
    lang: str
    name: str
    operation: str
    timestamp: str
    substatus: tuple[SubstatusEntry, ...]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _message(value: object) -> tuple[str, str]:
    if not isinstance(value, dict):
        return "", ""
    return _text(value.get("lang")), _text(value.get("message"))


def _read_status(document: Any) -> Status | None:
    if not isinstance(document, list) or not document or not isinstance(document[0], dict):
        return None
    first = document[0]
    body = first.get("status")
    if not isinstance(body, dict):
        return None
    lang, message = _message(body.get("formattedMessage"))
    entries = body.get("substatus")
    substatus = tuple(
        SubstatusEntry(
            name=_text(entry.get("name")),
            status=_text(entry.get("status")),
            code=_int(entry.get("code")),
            message=_message(entry.get("formattedMessage"))[1],
        )
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    )
    return Status(
        status=_text(body.get("status")),
        code=_int(body.get("code")),
        message=message,
        lang=lang,
        name=_text(body.get("name")),
        operation=_text(body.get("operation")),
        timestamp=_text(first.get("timestampUTC")),
        substatus=substatus,
    )


def _json_or_none(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8-sig"))
    except ValueError:
        return None


@attrs.frozen(kw_only=True)
class HarnessResult:
    """What one operation produced. `files` maps paths relative to the harness root to the
    bytes of every file the handler created or changed (events included)."""

    handler: str
    version: str
    operation: Operation
    sequence: int
    extension: str | None
    exit_code: int | None
    """The command's exit code; None when the harness's timeout cancelled the operation."""
    timed_out: bool
    duration: float
    handler_dir: Path
    status_path: Path
    status_bytes: bytes | None
    status_document: Any
    status: Status | None
    heartbeat_bytes: bytes | None
    heartbeat: Mapping[str, Any] | None
    events: tuple[Mapping[str, Any], ...]
    log: str
    files: Mapping[str, bytes]
    env: Mapping[str, str]

    def describe(self) -> str:
        """A few lines for assertion messages: exit code, status, message, log tail."""
        status = self.status
        lines = [
            f"{self.operation.value} of {self.handler} {self.version} (sequence {self.sequence})",
            "  exit code: " + ("timed out" if self.timed_out else str(self.exit_code)),
        ]
        if self.status_bytes is None:
            lines.append(f"  status: no file at {self.status_path}")
        elif status is None:
            lines.append(f"  status file: {self.status_bytes[:200]!r}")
        else:
            lines.append(f"  status: {status.status} code {status.code}: {status.message}")
        if self.log:
            tail = self.log[-_LOG_TAIL:]
            lines.append("  log:\n" + "\n".join("    " + line for line in tail.splitlines()))
        return "\n".join(lines)

    def status_problems(self) -> list[str]:
        """The problems `assert_valid_status` reports (empty when the status is valid)."""
        if self.status_bytes is None:
            return [f"no status file was written ({self.status_path})"]
        return validate_status(self.status_bytes)

    def assert_valid_status(self) -> None:
        """Fail unless the status file exists and `validate_status` finds nothing wrong."""
        problems = self.status_problems()
        if problems:
            listing = "\n".join(f"  {problem}" for problem in problems)
            raise AssertionError(
                f"invalid status file {self.status_path}:\n{listing}\n{self.describe()}"
            )

    def assert_valid_heartbeat(self) -> None:
        """Fail unless `heartbeat.log` exists and `validate_heartbeat` finds nothing wrong."""
        if self.heartbeat_bytes is None:
            raise AssertionError(f"no heartbeat was written\n{self.describe()}")
        problems = validate_heartbeat(self.heartbeat_bytes)
        if problems:
            listing = "\n".join(f"  {problem}" for problem in problems)
            raise AssertionError(f"invalid heartbeat.log:\n{listing}")

    def assert_success(self, message: str | None = None) -> None:
        """Fail unless the operation exited 0 with a valid `success` status (and `message`,
        when given, is part of the status message)."""
        self.assert_valid_status()
        status = self.status
        assert status is not None  # a valid status parses
        if self.exit_code != 0 or status.status != "success":
            raise AssertionError(
                f"expected success, got exit code {self.exit_code} and status"
                f" {status.status!r} code {status.code}: {status.message}\n{self.describe()}"
            )
        if message is not None and message not in status.message:
            raise AssertionError(
                f"expected {message!r} in the status message, got {status.message!r}"
            )

    def assert_error(self, code: int, message: str | None = None) -> None:
        """Fail unless the status is a valid `error` with `code`, the exit code is the one
        a command reporting it exits with (code if in 1..255, else 1), and `message`, when
        given, is part of the status message."""
        self.assert_valid_status()
        status = self.status
        assert status is not None
        expected_exit = code if 1 <= code <= 255 else 1
        if status.status != "error" or status.code != code:
            raise AssertionError(
                f"expected error {code}, got status {status.status!r} code {status.code}:"
                f" {status.message}\n{self.describe()}"
            )
        if self.exit_code != expected_exit:
            raise AssertionError(
                f"error {code} should exit {expected_exit}, the operation exited"
                f" {self.exit_code}\n{self.describe()}"
            )
        if message is not None and message not in status.message:
            raise AssertionError(
                f"expected {message!r} in the status message, got {status.message!r}"
            )


@attrs.frozen
class _Prepared:
    handler_dir: Path
    log_folder: Path
    events_folder: Path
    status_path: Path
    env: dict[str, str]
    before: dict[str, tuple[int, int]]
    log_sizes: dict[Path, int]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (mtime_ns, size) of every file under `root`."""
    found: dict[str, tuple[int, int]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            found[path.relative_to(root).as_posix()] = (info.st_mtime_ns, info.st_size)
    return found


def _log_sizes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in folder.glob("*.log") if path.is_file()}


@attrs.define(eq=False)
class Harness:
    """Runs operations of SDK handler classes in handler dirs under `root`.

    Handler dirs persist for the harness's life, so successive runs (install, enable with
    sequence 0, enable with sequence 1, ...) see each other's files, as they would on a
    machine. `certificate_dir` holds the certificate pair reused across harnesses.
    `backend` is the anyio backend `run` starts ("asyncio" or "trio"); `arun` runs on
    the caller's.
    """

    root: Path = attrs.field(converter=Path)
    certificate_dir: Path = attrs.field(converter=Path)
    timeout: float = 30.0
    backend: str = attrs.field(default="asyncio", converter=check_backend)
    _certificate: Certificate | None = attrs.field(default=None, init=False)

    def handler_dir(self, handler_class: type[Handler[Any, Any]]) -> Path:
        """`<root>/<Publisher.Type>-<version>`: where `handler_class` runs."""
        return self.root / f"{handler_class.name}-{handler_class.version}"

    def log_folder(self, handler_class: type[Handler[Any, Any]]) -> Path:
        """`<root>/log/<Publisher.Type>`: the handler's log folder (it outlives versions)."""
        return self.root / "log" / handler_class.name

    def run(
        self,
        handler_class: type[Handler[Any, Any]],
        operation: Operation | str = Operation.ENABLE,
        *,
        settings: Any = None,
        protected_settings: Any = None,
        sequence: int = 0,
        extension: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        updating_from: str | None = None,
        disable_exit_code: int | None = None,
        uninstall_exit_code: int | None = None,
    ) -> HarnessResult:
        """Run `operation` and return what it produced (see the class and `arun`)."""
        return run_blocking(
            lambda: self.arun(
                handler_class,
                operation,
                settings=settings,
                protected_settings=protected_settings,
                sequence=sequence,
                extension=extension,
                env=env,
                timeout=timeout,
                updating_from=updating_from,
                disable_exit_code=disable_exit_code,
                uninstall_exit_code=uninstall_exit_code,
            ),
            call="exthandler_harness.run()",
            instead="exthandler_harness.arun(...)",
            backend=self.backend,
        )

    async def arun(
        self,
        handler_class: type[Handler[Any, Any]],
        operation: Operation | str = Operation.ENABLE,
        *,
        settings: Any = None,
        protected_settings: Any = None,
        sequence: int = 0,
        extension: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the handler's limit, as an agent sets it
        updating_from: str | None = None,
        disable_exit_code: int | None = None,
        uninstall_exit_code: int | None = None,
    ) -> HarnessResult:
        """Run `operation` of `handler_class` with sequence number `sequence`.

        `settings` and `protected_settings` are plain objects (or attrs instances). When
        both are None, the settings file of `sequence` is kept if there is one (disable
        and uninstall see the settings enable saw), else the empty file of a handler given
        no settings is written. `extension` names a
        multi-config extension (`ConfigExtensionName`). For `update`, `updating_from` is
        the old version (`disable_exit_code` its disable's exit code); for install and
        enable, `uninstall_exit_code` is the old uninstall's (default `NOT_RUN`). `env`
        adds or overrides variables. The operation is cancelled after `timeout` seconds
        (default: the harness's) and the result says `timed_out`.
        """
        operation = Operation(operation)
        handler_class.check()
        prepared = self._prepare(
            handler_class,
            operation,
            settings=plain(settings),
            protected=plain(protected_settings),
            sequence=sequence,
            extension=extension,
            env=env,
            updating_from=updating_from,
            disable_exit_code=disable_exit_code,
            uninstall_exit_code=uninstall_exit_code,
        )
        limit = self.timeout if timeout is None else timeout
        exit_code: int | None = None
        start = time.monotonic()
        with anyio.move_on_after(limit):
            exit_code = await run_operation(
                handler_class,
                operation,
                handler_dir=prepared.handler_dir,
                env=prepared.env,
                time_budget=limit,
                status_refresh=max(limit, 1.0),
            )
        duration = time.monotonic() - start
        return self._collect(
            handler_class, operation, prepared, sequence, extension, exit_code, duration
        )

    # -- before ----------------------------------------------------------------------------

    def _certificate_pair(self) -> Certificate:
        if self._certificate is None:
            self._certificate = seed_certificate(self.certificate_dir, self.root)
        return self._certificate

    def _prepare(
        self,
        handler_class: type[Handler[Any, Any]],
        operation: Operation,
        *,
        settings: Any,
        protected: Any,
        sequence: int,
        extension: str | None,
        env: Mapping[str, str] | None,
        updating_from: str | None,
        disable_exit_code: int | None,
        uninstall_exit_code: int | None,
    ) -> _Prepared:
        handler_dir = self.handler_dir(handler_class)
        log_folder = self.log_folder(handler_class)
        events = log_folder / EVENTS_DIR
        config, status = handler_dir / CONFIG_DIR, handler_dir / STATUS_DIR
        for folder in (config, status, events):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        environment = HandlerEnvironment(
            name=handler_class.name,
            log_folder=log_folder,
            config_folder=config,
            status_folder=status,
            heartbeat_file=handler_dir / HEARTBEAT_NAME,
            events_folder=events,
        )
        (handler_dir / HANDLER_ENVIRONMENT_NAME).write_bytes(
            render_handler_environment(environment)
        )
        settings_path = config / settings_file_name(extension, sequence)
        if settings is not None or protected is not None or not settings_path.exists():
            settings_path.write_bytes(self._settings_file(settings, protected))
            settings_path.chmod(0o600)
        variables = {
            Variable.SEQUENCE_NUMBER.value: str(sequence),
            Variable.EXTENSION_PATH.value: str(handler_dir),
            Variable.EXTENSION_VERSION.value: handler_class.version,
            Variable.SUPPORTED_FEATURES.value: SUPPORTED_FEATURES,
        }
        if extension is not None:
            variables[Variable.EXTENSION_NAME.value] = extension
        if operation == Operation.UPDATE:
            variables[Variable.UPDATE_TO_VERSION.value] = handler_class.version
            variables[Variable.UPDATING_FROM_VERSION.value] = updating_from or ""
            variables[Variable.DISABLE_EXIT_CODE.value] = (
                NOT_RUN if disable_exit_code is None else str(disable_exit_code)
            )
        if operation in (Operation.INSTALL, Operation.ENABLE):
            variables[Variable.UNINSTALL_EXIT_CODE.value] = (
                NOT_RUN if uninstall_exit_code is None else str(uninstall_exit_code)
            )
        variables.update(env or {})
        return _Prepared(
            handler_dir=handler_dir,
            log_folder=log_folder,
            events_folder=events,
            status_path=status / status_file_name(extension, sequence),
            env=variables,
            before=_snapshot(self.root),
            log_sizes=_log_sizes(log_folder),
        )

    def _settings_file(self, settings: Any, protected: Any) -> bytes:
        if settings is None and protected is None:
            return b""
        if settings is not None and not isinstance(settings, Mapping):
            # publicSettings is a JSON object (docs/protocol.md#on-disk).
            raise TypeError(f"settings: {type(settings).__name__}, not a mapping or attrs instance")
        if protected is None:
            return render_settings(settings, None, None)
        certificate = self._certificate_pair()
        envelope = encrypt_protected_settings(protected, certificate)
        return render_settings(settings, envelope, certificate.thumbprint)

    # -- after -----------------------------------------------------------------------------

    def _collect(
        self,
        handler_class: type[Handler[Any, Any]],
        operation: Operation,
        prepared: _Prepared,
        sequence: int,
        extension: str | None,
        exit_code: int | None,
        duration: float,
    ) -> HarnessResult:
        after = _snapshot(self.root)
        files = {
            name: (self.root / name).read_bytes()
            for name, stamp in sorted(after.items())
            if prepared.before.get(name) != stamp
        }
        events: list[Mapping[str, Any]] = []
        for path in sorted(prepared.events_folder.glob("*.json")):
            document = _json_or_none(path.read_bytes())
            items = document if isinstance(document, list) else [document]
            events.extend(item for item in items if isinstance(item, dict))
            path.unlink()  # collected, as an agent does
        log = "".join(
            path.read_bytes()[prepared.log_sizes.get(path, 0) :].decode("utf-8", "replace")
            for path in sorted(_log_sizes(prepared.log_folder))
        )
        status_bytes = _read_or_none(prepared.status_path)
        heartbeat_bytes = _read_or_none(prepared.handler_dir / HEARTBEAT_NAME)
        status_document = _json_or_none(status_bytes)
        heartbeat_document = _json_or_none(heartbeat_bytes)
        heartbeat = None
        if (
            isinstance(heartbeat_document, list)
            and heartbeat_document
            and isinstance(heartbeat_document[0], dict)
            and isinstance(heartbeat_document[0].get("heartbeat"), dict)
        ):
            heartbeat = heartbeat_document[0]["heartbeat"]
        return HarnessResult(
            handler=handler_class.name,
            version=handler_class.version,
            operation=operation,
            sequence=sequence,
            extension=extension,
            exit_code=exit_code,
            timed_out=exit_code is None,
            duration=duration,
            handler_dir=prepared.handler_dir,
            status_path=prepared.status_path,
            status_bytes=status_bytes,
            status_document=status_document,
            status=_read_status(status_document),
            heartbeat_bytes=heartbeat_bytes,
            heartbeat=heartbeat,
            events=tuple(events),
            log=log,
            files=files,
            env=dict(prepared.env),
        )


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
