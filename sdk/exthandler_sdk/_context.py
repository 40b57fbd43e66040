"""`Context`: everything one operation of a handler gets to see and use."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._errors import ExtHandlerError
from .protocol import READ_LIMIT, RUNTIME_POLICY_FILE, HandlerEnvironment, Operation, Variable

# Handler modules import `Context` for their annotations: the reporters' modules are
# imported by the runner when an operation runs, not with the handler.
if TYPE_CHECKING:
    import logging

    from ._events import Events
    from ._heartbeat import Heartbeat
    from ._status import StatusWriter

__all__ = ["Context", "Detached"]

S = TypeVar("S")
P = TypeVar("P")


class Detached(BaseException):
    """Raised by `Context.detach()` in the process that launched the background worker.

    It derives from BaseException (like SystemExit) so that a handler's `except Exception`
    does not swallow it: the launching process must stop working, as the worker now owns
    the operation. The runner catches it and exits 0 with a `transitioning` status.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.pid = pid


class DetachError(ExtHandlerError, RuntimeError):
    """The background worker could not be started."""


@attrs.define(eq=False, kw_only=True)
class Context(Generic[S, P]):
    """What a handler's operation receives: settings, protocol facts and reporters.

    `settings`/`protected` are the structured public and protected settings (None when
    the handler declares None). The protocol's environment variables are typed attributes;
    `environment` is the parsed HandlerEnvironment.json. `status`, `heartbeat` and
    `events` write the files the agent reads; `log` writes the handler's own log file.
    `deadline` is a `time.monotonic()` value by which the agent may kill the command (the
    reference agent's timeout for the operation unless overridden); it is informational.
    """

    settings: S
    protected: P
    sequence_number: int
    extension_name: str | None
    operation: Operation
    handler_name: str
    handler_dir: Path
    handler_version: str
    updating_from_version: str | None = None
    update_to_version: str | None = None
    disable_exit_code: int | None = None
    disable_exit_codes: dict[str, int | None] = attrs.field(factory=dict)
    uninstall_exit_code: int | None = None
    environment: HandlerEnvironment
    deadline: float = math.inf
    log: logging.Logger
    status: StatusWriter
    heartbeat: Heartbeat
    events: Events
    detached: bool = False
    env: Mapping[str, str] = attrs.field(factory=dict)
    spec: str | None = None
    """`module:Class` of the handler when known (out of process); needed by `detach()`."""
    clock: Callable[[], float] = time.monotonic

    def remaining(self) -> float:
        """Seconds left before `deadline` (never negative; inf without a deadline)."""
        return max(0.0, self.deadline - self.clock())

    def runtime_policy(self) -> dict[str, Any] | None:
        """The `runtimePolicy` the administrator's extension policy gives this handler
        (`<config folder>/runtimePolicy.json`, written by the runtime before each command),
        or None when it gives none. Its meaning is the handler's to define. A file that is
        a link, too large or not a JSON object raises ExtHandlerError."""
        path = self.environment.config_folder / RUNTIME_POLICY_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExtHandlerError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        with open(fd, "rb") as stream:
            data = stream.read(READ_LIMIT + 1)
        if len(data) > READ_LIMIT:
            raise ExtHandlerError(f"{path}: larger than {READ_LIMIT} bytes")
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise ExtHandlerError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ExtHandlerError(f"{path}: not a JSON object")
        return value

    async def detach(self) -> None:
        """Continue this `enable` in a background process and let the command return.

        Out of process (`python -m exthandler_sdk run MODULE:CLASS enable`) this writes a
        `transitioning` status, launches the same command with `--detached` in a new
        session (stdio on /dev/null) and raises `Detached`, so that the command exits 0
        at once; the worker then runs `enable` again with `ctx.detached` set, where this
        call does nothing, and writes the final status. In process, in the worker, or for
        any other operation, it does nothing.
        """
        if self.detached or self.spec is None or self.operation is not Operation.ENABLE:
            return
        await self.status.transitioning("continuing in the background")
        pid = _spawn_worker(self.spec, self.handler_dir, self.env, self.sequence_number)
        # From here the worker owns the status file: this process writes nothing more
        # (no await since the launch, so no refresh can have slipped in).
        self.status.freeze()
        self.log.info("enable continues in background process %d", pid)
        raise Detached(pid)

    async def start_worker(self, method: Callable[[Context[S, P]], Awaitable[None]]) -> int:
        """Run `method` (a method of this handler, e.g. `self.probe`) in a background
        process that outlives the enable command; return its pid.

        The same in process and packaged: `python -m exthandler_sdk worker MODULE:CLASS
        METHOD` in a new session, standard streams on /dev/null, recorded under the config
        folder. It starts once this enable has written its outcome, and calls the method
        with a `Context` of its own (the settings of this sequence number, `detached`
        true, no deadline). A worker of the same method that runs for this sequence
        number is kept (its pid is returned); one of another sequence number is stopped
        first. `disable` and `uninstall` stop the extension's workers before the
        handler's method runs. Only `enable` may start one (`WorkerError` otherwise, and
        when the worker cannot start).
        """
        import functools

        import anyio.to_thread

        from ._workers import WorkerError, WorkerRecord, WorkerRecords, alive, launch, worker_spec

        handler = getattr(method, "__self__", None)
        name = getattr(method, "__name__", None)
        if handler is None or not isinstance(name, str) or getattr(handler, name, None) != method:
            raise WorkerError("start_worker takes a method of the handler, e.g. self.probe")
        if self.operation is not Operation.ENABLE:
            raise WorkerError(f"a worker is started by enable, not by {self.operation.value}")
        spec = worker_spec(handler, name)
        records = WorkerRecords(self.environment.config_folder, self.extension_name)
        record = records.read(name)
        if record is not None and alive(record.identity):
            if record.sequence == self.sequence_number:
                return record.identity.pid
            await records.stop(name)
            self.log.info("stopped the worker %s of sequence number %d", name, record.sequence)
        identity = await anyio.to_thread.run_sync(
            functools.partial(
                launch,
                spec,
                name,
                handler_dir=self.handler_dir,
                env=self.env,
                sequence=self.sequence_number,
            )
        )
        records.write(WorkerRecord(identity=identity, method=name, sequence=self.sequence_number))
        self.log.info("started the worker %s (pid %d)", name, identity.pid)
        return identity.pid

    async def stop_worker(
        self, method: Callable[[Context[S, P]], Awaitable[None]] | None = None
    ) -> bool:
        """Stop the background worker running `method` (every worker of this extension
        when None): SIGTERM to its process group, SIGKILL 10 seconds later. Whether one
        was running."""
        from ._workers import WorkerRecords

        records = WorkerRecords(self.environment.config_folder, self.extension_name)
        if method is None:
            return bool(await records.stop_all())
        return await records.stop(getattr(method, "__name__", ""))


def _spawn_worker(spec: str, handler_dir: Path, env: Mapping[str, str], sequence: int) -> int:
    """Start `python -m exthandler_sdk run SPEC enable --detached` in a new session."""
    import subprocess

    command = [sys.executable, "-m", "exthandler_sdk", "run", spec, "enable", "--detached"]
    environment = dict(env)
    environment[Variable.SEQUENCE_NUMBER] = str(sequence)
    try:
        process = subprocess.Popen(
            command,
            cwd=handler_dir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise DetachError(f"cannot start the background worker: {exc}") from exc
    # Not waited for: it outlives this process by design. Forget it without a warning.
    process.returncode = 0
    return process.pid
