"""Run SDK handler classes inside the runtime, writing exactly the files a package would.

A registered class is offered as a package version like any other. "Fetching" it lays out
its handler dir (the manifest its package would carry, and a marker naming the class);
its commands are calls of the SDK's `run_operation`, the very function a packaged
handler's commands run, so status, settings and heartbeats look the same either way.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from exthandler_sdk import ErrorCode, ExtHandlerError, Handler, Operation
from exthandler_sdk.protocol import COMMAND_TIMEOUTS, render_manifest

from .._errors import PackageError
from .._model import HandlerName, Version
from .._packages.manifest import MANIFEST_NAME, HandlerManifest
from .._packages.repository import Installed, PackageRef, Workspace
from .._values import Value
from .base import CommandRequest
from .process import CommandResult, write_log_entry

__all__ = ["InProcessExecutor", "InProcessHandlers", "materialize", "run_inprocess", "spec_of"]


def spec_of(handler_class: type[Handler[Any, Any]]) -> str:
    """`module:QualifiedName`, how the class is named in markers and logs."""
    return f"{handler_class.__module__}:{handler_class.__qualname__}"


class InProcessHandlers:
    """The handler classes registered on a runtime; a `PackageSource` of their versions."""

    _classes: dict[tuple[str, Version], type[Handler[Any, Any]]]
    # Classes named but not imported yet (see `register_paths`): handler key -> paths.
    _named: dict[str, list[str]]
    # Why a named class could not be loaded, to be logged once by whoever loads it.
    problems: list[str]

    def __init__(self) -> None:
        self._classes = {}
        self._named = {}
        self.problems = []

    def register(self, handler_class: type[Handler[Any, Any]]) -> None:
        """Offer `handler_class` at its version (a later registration of the same wins)."""
        handler_class.check()
        name = HandlerName.parse(handler_class.name)
        self._classes[(name.key, Version.parse(handler_class.version))] = handler_class

    def register_all(self, classes: Iterable[type[Handler[Any, Any]]]) -> None:
        for handler_class in classes:
            self.register(handler_class)

    def register_paths(self, paths: Mapping[str, str | Sequence[str]]) -> None:
        """Offer the classes at `paths` (handler name -> `module:QualifiedName`, or a list
        of them), imported only when `load` or `handler_class` asks for their handler.
        A class registered directly for the same handler and version wins over them."""
        for name, found in paths.items():
            key = HandlerName.parse(name).key
            listed = [found] if isinstance(found, str) else list(found)
            self._named.setdefault(key, []).extend(listed)

    def register_plugins(self, hook: Any) -> None:
        """What the plugins' `exthandler_register_handlers` and `exthandler_handler_paths`
        hooks offer (`hook` is a plugin manager's `hook`)."""
        for paths in hook.exthandler_handler_paths():
            self.register_paths(paths)
        for registered in hook.exthandler_register_handlers():
            self.register_all(registered)

    def load(self, handlers: Iterable[HandlerName]) -> None:
        """Import the classes named for `handlers` (see `register_paths`); one that cannot
        be imported is not offered, and why is added to `problems`."""
        from .._plugins import load_object

        for handler in handlers:
            paths = self._named.pop(handler.key, None)
            for path in paths or ():
                try:
                    handler_class = load_object(path)
                    name = HandlerName.parse(handler_class.name)
                    if name.key != handler.key:
                        raise ValueError(f"it is a handler of {name}, not of {handler}")
                    key = (name.key, Version.parse(handler_class.version))
                    if key not in self._classes:
                        handler_class.check()
                        self._classes[key] = handler_class
                except Exception as exc:  # a broken plugin costs its handler, not the pass
                    self.problems.append(f"{handler}: in-process class {path}: {exc}")

    def handler_class(
        self, handler: HandlerName, version: Version
    ) -> type[Handler[Any, Any]] | None:
        if handler.key in self._named:
            self.load([handler])
        return self._classes.get((handler.key, version))

    async def list_packages(self) -> Sequence[PackageRef]:
        return [
            PackageRef(
                handler=HandlerName.parse(cls.name),
                version=version,
                location=f"in-process:{spec_of(cls)}",
            )
            for (_, version), cls in sorted(self._classes.items(), key=lambda item: item[0])
        ]

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        """Lay out `directory` for the registered class (a few small writes: no thread).

        The dir is derived from the class alone, so laying it out again after a crash
        changes nothing anyone sees (`Installed.rebuildable`)."""
        handler_class = self.handler_class(ref.handler, ref.version)
        if handler_class is None:
            raise PackageError(
                ErrorCode.PACKAGE_DOWNLOAD,
                f"{ref.handler} {ref.version} is no longer registered to run in process",
            )
        return Installed(manifest=materialize(handler_class, directory), rebuildable=True)


class InProcessExecutor(Value, kw_only=False):
    """The `Executor` of handler dirs laid out for a registered class: each command is a
    call of the class's operation on the running event loop (see `run_inprocess`)."""

    handlers: InProcessHandlers
    # The SDK tells an in-process handler its state; no script reads HandlerState files.
    reads_handler_state: bool = False

    def accepts(self, manifest: HandlerManifest) -> bool:
        return manifest.in_process is not None

    def command_line(self, request: CommandRequest) -> str:
        return f"in-process {request.manifest.in_process} {request.operation.value}"

    async def run(self, request: CommandRequest) -> CommandResult:
        handler_class = self.handlers.handler_class(request.handler, request.version)
        if handler_class is None:
            # Its plugin is gone (uninstalled, or a version no longer registered): the
            # step cannot run; it is skipped so that removal and upgrades go on.
            return CommandResult(
                operation=request.operation,
                command=request.command,
                exit_code=None,
                skipped=f"{request.manifest.in_process} is no longer registered",
            )
        timeout = request.timeout
        if timeout is None:
            own = handler_class.command_timeouts.get(request.operation.value)
            timeout = COMMAND_TIMEOUTS[request.operation] if own is None else float(own)
        return await run_inprocess(
            handler_class,
            handler_dir=request.directory,
            operation=request.operation,
            env=request.env,
            timeout=timeout,
            log_file=request.log_file,
        )


def class_manifest(handler_class: type[Handler[Any, Any]]) -> HandlerManifest:
    """The manifest a handler dir laid out for `handler_class` would hold (no I/O)."""
    return handler_class.manifest()


def materialize(handler_class: type[Handler[Any, Any]], directory: Path) -> HandlerManifest:
    """Lay out a handler dir for `handler_class`: the manifest its package would carry,
    naming the class under IN_PROCESS_KEY (blocking I/O)."""
    from .._fs import make_dir, write_atomic  # modes set whatever the umask

    make_dir(directory, 0o755)
    manifest = handler_class.manifest().replace(in_process=spec_of(handler_class))
    data = render_manifest(manifest)
    write_atomic(f"{directory}/{MANIFEST_NAME}", data, mode=0o644, durable=False)
    return manifest


async def run_inprocess(
    handler_class: type[Handler[Any, Any]],
    *,
    handler_dir: Path,
    operation: Operation,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the handler's limit: its work is cancelled, not ours
    log_file: Path | None = None,
) -> CommandResult:
    """Run one operation of an SDK handler class in this process, within `timeout` seconds.

    `install`, `update` and `uninstall` are not called when the class keeps `Handler`'s,
    which does nothing and reports nothing: the step succeeds at once (exit code 0), and
    the CommandExecution.log entry says so. `enable` and `disable` always run: they report.
    """
    from exthandler_sdk import run_operation  # the SDK's runner: only once a handler runs

    spec = spec_of(handler_class)
    started = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    exit_code: int | None = None
    hint: str | None = None
    timed_out = False
    outcome: str | None = None
    if operation in _SILENT and not handler_class.implements(operation):
        exit_code = 0
        outcome = f"not run: {handler_class.__name__} does not implement {operation.value}"
    else:
        with anyio.move_on_after(timeout) as scope:
            try:
                exit_code = await run_operation(
                    handler_class,
                    operation,
                    handler_dir=handler_dir,
                    env=env,
                    time_budget=timeout,
                )
            except ExtHandlerError as exc:  # the handler dir or the class is unusable
                hint = str(exc)
        timed_out = scope.cancelled_caught
    duration = time.monotonic() - start
    result = CommandResult(
        operation=operation,
        command=f"in-process {spec}",
        exit_code=exit_code,
        timed_out=timed_out,
        duration=duration,
        hint=hint,
        timeout=timeout,
    )
    if log_file is not None:  # one append: cheaper on the event loop than in a thread
        write_log_entry(
            log_file,
            started=started,
            operation=operation,
            command_line=f"in-process {spec} {operation.value}",
            env=env,
            outcome=outcome or result.describe(),
            duration=duration,
        )
    return result


# The operations whose base-class version neither acts nor reports (see run_inprocess).
_SILENT = frozenset({Operation.INSTALL, Operation.UPDATE, Operation.UNINSTALL})
