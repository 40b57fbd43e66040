"""Running one operation of a handler: in process (`run_operation`) or as a command.

Outcomes (docs/sdk/reference.md, "What an operation's outcome writes"): `enable` or
`disable` returning normally writes `success` unless the handler already wrote a terminal
status (`install`, `update` and `uninstall` then write nothing); `HandlerError(code,
message)` writes `error` with that code; any other exception writes `error` -1 with the
exception's message; settings that do not fit the declared types write `error` 53 listing
every bad field. The exit code is what a command would exit with: 0 unless the final
status is `error`, then its code when in 1..255 and 1 otherwise.

Settings are read from `<seq>.settings`; for operations other than `enable` a missing file
falls back to the newest settings file present (the agent runs an old version's `disable`
and `uninstall` with the new sequence number during an upgrade).

`enable` runs once per sequence number (see `_runonce`): a sequence applied successfully
is not applied again (its status is re-reported) unless the class sets
`enable_runs_on_same_sequence = True` (daemons that must start again after a reboot); an
older sequence than the one applied is ignored; a newer sequence stops an older one still
running (which reports `warning` "superseded").
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._environment import load_handler_environment
from ._errors import ExtHandlerError, HandlerError
from ._files import write_atomic
from ._handler import Handler
from ._logging import PendingLog, close_logger
from ._runonce import POLL_INTERVAL, RunOnce
from ._status import StatusWriteError, StatusWriter
from .protocol import (
    COMMAND_TIMEOUTS,
    HANDLER_NAME_PATTERN,
    ErrorCode,
    HandlerEnvironment,
    Operation,
    ProtocolVariables,
    StatusLevel,
    parse_settings_file_name,
    read_protocol_variables,
    settings_file_name,
    status_file_name,
    utc_timestamp,
)

# The event loop, the settings converter (and the cryptography behind it) and the context
# are imported once an operation is to run: an enable whose sequence number was already
# applied, the commonest command of all, is answered without them (see `main_run`).
if TYPE_CHECKING:
    from logging import Logger

    import anyio

    from ._context import Context, Detached
    from ._events import Events

__all__ = ["DETACHED_BUDGET", "HandlerLoadError", "load_handler", "main_run", "run_operation"]

DETACHED_BUDGET = 90 * 60.0
"""Default time budget of a detached enable (the platform's budget for long extensions)."""

STATUS_REFRESH = 60.0
"""Default seconds between rewrites of a `transitioning` status."""

_USAGE = (
    "usage: python -m exthandler_sdk run MODULE:CLASS OPERATION [--detached]"
    " [--runs-once-as PUBLISHER.TYPE]\n"
)


HANDLER_NAME = re.compile(HANDLER_NAME_PATTERN)


class HandlerLoadError(ExtHandlerError, ImportError):
    """`MODULE:CLASS` does not name an importable Handler subclass."""


def load_handler(spec: str) -> type[Handler[Any, Any]]:
    """Import the Handler subclass named by `package.module:Class` (or `:Outer.Inner`)."""
    module_name, colon, qualname = spec.partition(":")
    if not colon or not module_name or not qualname:
        raise HandlerLoadError(f"expected MODULE:CLASS, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerLoadError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerLoadError(
                f"module {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not isinstance(target, type) or not issubclass(target, Handler):
        raise HandlerLoadError(f"{spec} is not a subclass of exthandler_sdk.Handler")
    return target


def exit_code_for(code: int) -> int:
    """The exit code a command reporting error `code` exits with (1..255, else 1)."""
    return code if 1 <= code <= 255 else 1


def _latest_sequence(config: Path, extension: str | None) -> int:
    """The highest sequence number with a settings file (when the agent named none)."""
    found = [0]
    with contextlib.suppress(OSError):
        for entry in config.iterdir():
            parsed = parse_settings_file_name(entry.name)
            if parsed is not None and parsed[0] == extension:
                found.append(parsed[1])
    return max(found)


async def run_operation(
    handler_class: type[Handler[Any, Any]],
    operation: Operation,
    *,
    handler_dir: Path,
    env: Mapping[str, str],
    status_refresh: float = STATUS_REFRESH,
    spec: str | None = None,
    detached: bool = False,
    time_budget: float | None = None,
    use_crypto_library: bool = True,
) -> int:
    """Run `operation` of `handler_class` in `handler_dir` as the agent's command would.

    `env` holds the protocol variables (docs/protocol.md#command-environment). The status
    file is written as the module docstring says; the return value is the command's exit
    code. `spec` (`module:Class`) enables `ctx.detach()`; `time_budget` overrides the time
    budget (`ctx.deadline`); `status_refresh` is how often a `transitioning` status is
    rewritten.
    Cancellation is never swallowed: background tasks are cancelled and awaited.
    """
    started = _start(
        handler_class,
        operation,
        handler_dir=handler_dir,
        env=env,
        status_refresh=status_refresh,
        detached=detached,
    )
    if isinstance(started, int):
        return started
    return await started.finish(
        spec=spec, time_budget=time_budget, use_crypto_library=use_crypto_library
    )


def _start(
    handler_class: type[Handler[Any, Any]],
    operation: Operation,
    *,
    handler_dir: Path,
    env: Mapping[str, str],
    status_refresh: float,
    detached: bool,
    worker: str | None = None,
) -> int | _Started:
    """The part of `run_operation` that needs no event loop: paths, log and status file,
    and for enable the run-once precheck (not for a `worker`, the name of the method a
    background worker runs). Its exit code when nothing is to be run (the log is then
    closed), else what `_Started.finish` needs to run the operation."""
    handler_class.check()
    operation = Operation(operation)
    begun = _Begun(handler_class.name, operation, handler_dir=handler_dir, env=env)
    log = begun.log
    try:
        status = begun.status_writer()
        run = _Run(
            handler_class=handler_class,
            operation=operation,
            sequence=begun.sequence,
            status=status,
            refresh=status_refresh,
            runonce=begun.runonce(),
            detached=detached,
            method=worker,
        )
        if operation is Operation.ENABLE and worker is None:
            skip = run.precheck()
            if skip is not None:
                log.write_plain()
                return skip
    except BaseException:
        log.write_plain()
        raise
    return _Started(
        run=run,
        handler_dir=handler_dir,
        env=env,
        environment=begun.environment,
        variables=begun.variables,
        log=log.open(),
    )


class _Begun:
    """What every operation starts with, before it knows whether it runs: the handler's
    folders, the protocol variables, its sequence number and its pending log."""

    def __init__(
        self, name: str, operation: Operation, *, handler_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.operation = operation
        self.handler_dir = handler_dir
        self.environment = environment = load_handler_environment(handler_dir)
        self.variables = read_protocol_variables(env)
        self.extension = self.variables.extension_name
        sequence = self.variables.sequence_number
        if sequence is None:
            sequence = _latest_sequence(environment.config_folder, self.extension)
        self.sequence = sequence
        type_name = name.rpartition(".")[2]
        self.log = PendingLog(
            environment.log_folder, f"{type_name}.log", name=f"exthandler_sdk.{name}"
        )
        self.log.info("%s seq %d starting (pid %d)", operation.value, sequence, os.getpid())

    def status_writer(self) -> StatusWriter:
        return StatusWriter(
            path=self.environment.status_folder / status_file_name(self.extension, self.sequence),
            name=self.extension or self.name,
            operation=self.operation,
        )

    def runonce(self) -> RunOnce:
        return RunOnce(self.handler_dir, self.environment.config_folder, self.extension)


def applied_enable(name: str, *, handler_dir: Path, env: Mapping[str, str]) -> int | None:
    """The exit code of an enable with nothing to run, answered without the handler's class
    (whose enable must run once per sequence number, and whose name is `name`); None when
    the enable is to run. The package's `bin/enable` asks this first (`--runs-once-as`):
    re-reporting an applied sequence number, the commonest command of all, then imports
    neither the handler's module nor what it imports."""
    begun = _Begun(name, Operation.ENABLE, handler_dir=handler_dir, env=env)
    try:
        skip = _precheck(begun.runonce(), begun.status_writer(), begun.sequence, rerun=False)
    except BaseException:
        begun.log.write_plain()
        raise
    if skip is not None:
        begun.log.write_plain()
    return skip


class _Started:
    """An operation past `_start`: what is left to do runs in the event loop."""

    def __init__(
        self,
        *,
        run: _Run,
        handler_dir: Path,
        env: Mapping[str, str],
        environment: HandlerEnvironment,
        variables: ProtocolVariables,
        log: Logger,
    ) -> None:
        self.run = run
        self.handler_dir = handler_dir
        self.env = env
        self.environment = environment
        self.variables = variables
        self.log = log

    async def finish(
        self, *, spec: str | None, time_budget: float | None, use_crypto_library: bool
    ) -> int:
        """Read the settings, build the context and run the operation; the log is closed
        at the end whatever happens."""
        try:
            return await self._finish(spec, time_budget, use_crypto_library)
        finally:
            close_logger(self.log)

    async def _finish(
        self, spec: str | None, time_budget: float | None, use_crypto_library: bool
    ) -> int:
        from ._context import Context
        from ._heartbeat import Heartbeat
        from ._settings import SettingsError, load_settings, read_settings_file

        run, environment, variables, log = self.run, self.environment, self.variables, self.log
        handler_class, operation, sequence = run.handler_class, run.operation, run.sequence
        extension = variables.extension_name
        status = run.status
        version = variables.handler_version or handler_class.version
        budget = time_budget
        if budget is None:
            budget = DETACHED_BUDGET if run.detached else COMMAND_TIMEOUTS[operation]
        if run.method is not None:
            budget = math.inf  # a background worker runs until it is stopped
        try:
            settings_path = environment.config_folder / settings_file_name(extension, sequence)
            if operation is not Operation.ENABLE and not settings_path.exists():
                # During an upgrade the agent runs the old version's disable and uninstall
                # with the new sequence number, whose settings exist only in the new
                # handler dir: those operations use the newest settings they have.
                newest = _latest_sequence(environment.config_folder, extension)
                settings_path = environment.config_folder / settings_file_name(extension, newest)
            raw = read_settings_file(settings_path)
            public_type, protected_type = handler_class.settings_types()
            public, protected = load_settings(
                raw,
                public_type,
                protected_type,
                lib_dir=self.handler_dir.parent,
                use_library=use_crypto_library,
            )
        except SettingsError as exc:
            log.error("%s", exc.message)
            status.write(StatusLevel.ERROR, exc.code, exc.message)
            return exc.code
        ctx: Context[Any, Any] = Context(
            settings=public,
            protected=protected,
            sequence_number=sequence,
            extension_name=extension,
            operation=operation,
            handler_name=handler_class.name,
            handler_dir=self.handler_dir,
            handler_version=version,
            updating_from_version=variables.updating_from_version,
            update_to_version=variables.update_to_version,
            disable_exit_code=variables.disable_exit_code,
            disable_exit_codes=variables.disable_exit_codes,
            uninstall_exit_code=variables.uninstall_exit_code,
            environment=environment,
            deadline=time.monotonic() + budget if math.isfinite(budget) else math.inf,
            log=log,
            status=status,
            heartbeat=Heartbeat(
                environment.heartbeat_file, bool(getattr(handler_class, "report_heartbeat", False))
            ),
            events=_events(environment, version, operation, log),
            detached=run.detached,
            env=dict(self.env),
            spec=spec,
        )
        if run.method is not None:
            return await run.execute(ctx, None)
        if operation is Operation.ENABLE:
            return await run.enable(ctx)
        if operation in _STOPPING_WORKERS:
            # Before the handler's own method: a worker must not report after it.
            from ._workers import WorkerRecords

            stopped = await WorkerRecords(environment.config_folder, extension).stop_all()
            if stopped:
                log.info("stopped background worker(s): %s", ", ".join(stopped))
        if operation in _REPORTING:
            status.stage(StatusLevel.TRANSITIONING, 0, f"{operation.display_name} in progress")
        return await run.execute(ctx, None)


# The status file of a sequence number tells how its settings were applied: enable and
# disable report there. Install, update and uninstall write to it only when they fail (or
# when the handler itself reports), so that they never overwrite the enable's outcome.
_REPORTING = frozenset({Operation.ENABLE, Operation.DISABLE})
# The operations that stop the extension's background workers (ctx.start_worker).
_STOPPING_WORKERS = frozenset({Operation.DISABLE, Operation.UNINSTALL})


def _events(
    environment: HandlerEnvironment, version: str, operation: Operation, log: Any
) -> Events:
    import uuid

    from ._events import Events

    return Events(
        folder=environment.events_folder,
        version=version,
        operation_id=str(uuid.uuid4()),
        log=log,
        task_name=operation.value,
    )


def _precheck(runonce: RunOnce, status: StatusWriter, sequence: int, *, rerun: bool) -> int | None:
    """For enable: an exit code when nothing is to be run (an older sequence number than
    the one applied, or the applied one itself unless `rerun`), else None."""
    completed = runonce.completed()
    if completed is not None and sequence < completed:
        return _ignore_older(status, sequence, completed)
    if completed == sequence and not rerun:
        return _report_applied(status, sequence)
    return None


def _ignore_older(status: StatusWriter, sequence: int, newer: int) -> int:
    status.write(
        StatusLevel.SUCCESS,
        0,
        f"sequence number {sequence} is older than {newer}, already applied or in progress;"
        " ignored",
    )
    return 0


def _report_applied(status: StatusWriter, sequence: int) -> int:
    """Re-report the terminal status the enable of this sequence wrote (new timestamp).

    Only an enable's own status is repeated: after a disable, the file says how the
    disable went, which is not what an enabled extension should show.
    """
    path = status.path
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, IndexError):
        document: Any = json.loads(path.read_bytes())
        level = StatusLevel(str(document[0]["status"]["status"]).lower())
        operation = str(document[0]["status"].get("operation", "")).lower()
        if level.terminal and operation == Operation.ENABLE.value:
            document[0]["timestampUTC"] = utc_timestamp()
            write_atomic(
                path, json.dumps(document, ensure_ascii=False).encode("utf-8"), durable=False
            )
            return 0
    status.write(StatusLevel.SUCCESS, 0, f"sequence number {sequence} was already applied")
    return 0


class _Run:
    """The state of one `run_operation` call once its paths are known."""

    def __init__(
        self,
        *,
        handler_class: type[Handler[Any, Any]],
        operation: Operation,
        sequence: int,
        status: StatusWriter,
        refresh: float,
        runonce: RunOnce,
        detached: bool,
        method: str | None = None,
    ) -> None:
        self.handler_class = handler_class
        self.operation = operation
        self.sequence = sequence
        self.status = status
        self.refresh = refresh
        self.runonce = runonce
        self.detached = detached
        # The method a background worker runs instead of the operation's.
        self.method = method
        self.rerun = bool(getattr(handler_class, "enable_runs_on_same_sequence", False))

    def precheck(self) -> int | None:
        """For enable: an exit code when nothing is to be run (older or applied sequence)."""
        return _precheck(
            self.runonce, self.status, self.sequence, rerun=self.rerun or self.detached
        )

    def _ignore_older(self, newer: int) -> int:
        return _ignore_older(self.status, self.sequence, newer)

    async def enable(self, ctx: Context[Any, Any]) -> int:
        """Enable under the run-once lock, stopping when a newer sequence supersedes it."""
        runonce, sequence = self.runonce, self.sequence
        if not runonce.try_acquire(sequence):
            holder = runonce.holder()
            if holder is not None and holder > sequence:
                return self._ignore_older(holder)
            if holder == sequence and not self.detached:
                ctx.log.info("sequence %d is already being applied; nothing to do", sequence)
                return 0
            if holder != sequence:
                runonce.request_supersede(sequence)
            self.status.write(StatusLevel.TRANSITIONING, 0, "waiting for an earlier enable to stop")
            await runonce.acquire(sequence)
        try:
            newer = runonce.requested_on_acquire
            if newer is not None and newer > sequence:
                return self._superseded(newer)
            skip = self.precheck()
            if skip is not None:
                return skip
            self.status.stage(StatusLevel.TRANSITIONING, 0, "Enable in progress")
            code = await self.execute(ctx, functools.partial(runonce.watch, sequence))
            if self.status.last_level in (StatusLevel.SUCCESS, StatusLevel.WARNING) and (
                not self.status.frozen
            ):
                runonce.record(sequence)
            return code
        finally:
            runonce.release()

    def _superseded(self, newer: int) -> int:
        message = f"superseded by sequence number {newer} before it finished"
        self.status.write(StatusLevel.WARNING, 0, message)
        return 0

    async def execute(
        self, ctx: Context[Any, Any], watch: Callable[[float], Awaitable[int]] | None
    ) -> int:
        """Run the operation's method, refreshing the status, and map its outcome.

        `watch(first)` returns a newer sequence number that supersedes this one, looking
        first after `first` seconds. The status refresher and the watcher start only once
        the work has lasted `quiet` seconds, before which neither would act: most
        operations are over by then and never pay for them. The work runs in this task,
        inside one task group; the refresher and the watcher are tasks of that group, started
        (after `quiet` seconds) only if the work suspends at all. The work cancels the group
        when it ends, and the watcher when a newer sequence takes over; a cancellation from
        outside stops all three and goes on.
        """
        import anyio

        handler = self.handler_class()
        work = _Work(getattr(handler, self.method or self.operation.value))
        first = min(FIRST_REPORT, self.refresh)
        quiet = min(first, POLL_INTERVAL)
        async with anyio.create_task_group() as group:

            async def helpers() -> None:
                await anyio.sleep(quiet)  # cancelled, with the group, when the work ends first
                group.start_soon(_refresh_forever, self.status, self.refresh, ctx, first - quiet)
                if watch is not None:
                    group.start_soon(work.watch, watch, POLL_INTERVAL - quiet, group.cancel_scope)

            await work.run(ctx, group.cancel_scope, functools.partial(group.start_soon, helpers))
        if not work.finished and work.newer is not None:
            ctx.log.warning("superseded by sequence number %d; work cancelled", work.newer)
            return self._superseded(work.newer)
        return self._outcome(work, ctx)

    def _outcome(self, work: _Work, ctx: Context[Any, Any]) -> int:
        from ._context import Detached

        error = work.error
        if work.cancelled:
            # The handler cancelled itself (a cancellation of ours is never caught).
            self.status.write(StatusLevel.ERROR, -1, f"{self.operation.value} was cancelled")
            return 1
        if isinstance(error, Detached):
            ctx.log.info("continuing in background process %d", error.pid)
            return 0
        if isinstance(error, HandlerError):
            ctx.log.error("%s failed with %d: %s", self.operation.value, error.code, error.message)
            self.status.write(StatusLevel.ERROR, error.code, error.message)
            return exit_code_for(error.code)
        if error is not None:
            ctx.log.error("%s failed", self.operation.value, exc_info=error)
            message = str(error) or type(error).__name__
            self.status.write(StatusLevel.ERROR, int(ErrorCode.UNKNOWN), message)
            return 1
        if not self.status.written_terminal and self.operation in _REPORTING:
            self.status.write(StatusLevel.SUCCESS, 0, f"{self.operation.display_name} succeeded")
        if self.status.last_level is StatusLevel.ERROR:
            return exit_code_for(self.status.last_code)
        ctx.log.info("%s seq %d succeeded", self.operation.value, self.sequence)
        return 0


class _Work:
    """One call of an operation's method, run as a task of `_Run.execute`'s group, and
    what became of it."""

    def __init__(self, method: Callable[[Context[Any, Any]], Awaitable[None]]) -> None:
        self.method = method
        # Whether the method returned or raised before anything cancelled it.
        self.finished = False
        # Whether the method cancelled itself (asyncio: it raised CancelledError).
        self.cancelled = False
        self.error: Exception | Detached | None = None
        # The newer sequence number that superseded this one, if any.
        self.newer: int | None = None

    async def run(
        self,
        ctx: Context[Any, Any],
        scope: anyio.CancelScope,
        on_suspend: Callable[[], object],
    ) -> None:
        """Call the method (`on_suspend` is called if it suspends); then cancel `scope`,
        which stops the refresher and the watcher, if they were started."""
        import anyio
        import anyio.lowlevel

        from ._context import Detached

        suspended = False

        def suspend() -> None:
            nonlocal suspended
            suspended = True
            on_suspend()

        try:
            await _eagerly(self.method(ctx), suspend)
        except anyio.get_cancelled_exc_class():
            if scope.cancel_called:
                raise
            # Raises again if the cancellation came from an enclosing scope: only one
            # that no scope sent is the handler's own.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self.cancelled = True
        except (Exception, Detached) as exc:
            self.error = exc
        self.finished = not scope.cancel_called
        if suspended:  # nothing else runs in the group otherwise: no cancellation to deliver
            scope.cancel()

    async def watch(
        self, watch: Callable[[float], Awaitable[int]], first: float, scope: anyio.CancelScope
    ) -> None:
        """Wait for a newer sequence number to supersede this one; then cancel the work."""
        self.newer = await watch(first)
        scope.cancel()


async def _eagerly(awaitable: Awaitable[None], on_suspend: Callable[[], object]) -> None:
    """Await `awaitable`, running its coroutine in this task up to its first suspension
    before anything else is set up: `on_suspend()` is called only if it suspends.

    This is what `await` does (the same task, the same cancel scopes, every value the
    coroutine yields passed to the event loop and every value or exception the loop sends
    passed back), split at the first suspension; most operations never suspend, and then
    no task is started for them.
    """
    coro = awaitable
    if not (hasattr(coro, "send") and hasattr(coro, "throw")):
        on_suspend()
        await awaitable
        return
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    on_suspend()
    await _Resumed(coro, yielded)


class _Resumed:
    """The rest of a coroutine that has yielded `first` to the event loop (see `_eagerly`)."""

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the event loop: a cancellation
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


async def _refresh_forever(
    status: StatusWriter, interval: float, ctx: Context[Any, Any], first: float
) -> None:
    """Write the `transitioning` status after `first` seconds, then rewrite it every
    `interval` seconds (new timestamp); nothing while the status is terminal."""
    import anyio

    delay = first
    while True:
        await anyio.sleep(delay)
        delay = interval
        try:
            status.refresh()
        except StatusWriteError as exc:
            ctx.log.warning("%s", exc)


# Seconds before the `transitioning` an enable or disable starts with is written: a
# missing status file reads as transitioning, and most operations are over sooner.
FIRST_REPORT = 1.0


def main_run(argv: list[str]) -> int:
    """`python -m exthandler_sdk run MODULE:CLASS OPERATION [--detached]` in a handler dir."""
    args = list(argv)
    detached = "--detached" in args
    args = [arg for arg in args if arg != "--detached"]
    once_as: str | None = None
    if "--runs-once-as" in args:
        at = args.index("--runs-once-as")
        once_as = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
        if not HANDLER_NAME.fullmatch(once_as):
            sys.stderr.write(f"--runs-once-as: {once_as!r} is not a handler name\n{_USAGE}")
            return 2
    if len(args) != 2:
        sys.stderr.write(_USAGE)
        return 2
    spec, operation_name = args
    try:
        operation = Operation(operation_name.lower())
    except ValueError:
        choices = ", ".join(op.value for op in Operation)
        sys.stderr.write(f"unknown operation {operation_name!r} (one of {choices})\n{_USAGE}")
        return 2
    if once_as is not None and operation is Operation.ENABLE and not detached:
        try:
            skip = applied_enable(once_as, handler_dir=Path.cwd(), env=os.environ)
        except ExtHandlerError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1
        if skip is not None:
            return skip
    try:
        handler_class = load_handler(spec)
    except HandlerLoadError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        started = _start(
            handler_class,
            operation,
            handler_dir=Path.cwd(),
            env=dict(os.environ),
            status_refresh=STATUS_REFRESH,
            detached=detached,
        )
        if isinstance(started, int):
            return started  # nothing to run (an applied sequence): no event loop needed
        import anyio

        finish = functools.partial(
            started.finish, spec=spec, time_budget=None, use_crypto_library=True
        )
        return anyio.run(finish, backend="asyncio")
    except ExtHandlerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
