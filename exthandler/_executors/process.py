"""Running a classic package's HandlerManifest commands the way the reference agent does.

A command runs as `/bin/sh -c <handler_dir>/<command>` in its own session, with stdin from
/dev/null and its output going to temporary *files*: an enable commonly starts a daemon that
inherits stdout, and a pipe would then never reach end-of-file. Only the direct child is
awaited; a daemon it leaves behind keeps running. On timeout, or when the surrounding scope
is cancelled, the whole process group gets SIGTERM, then SIGKILL after a grace period.

This module holds the protocol's side (variables, excerpt, result); the parts live in
_spawn (start, wait, kill), _orphans (markers of running commands), _cmdlog
(CommandExecution.log) and _hints (the likely cause of a failure).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from exthandler_sdk import Operation
from exthandler_sdk.procs import BOOT_ID_PATH
from exthandler_sdk.protocol import (
    COMMAND_TIMEOUTS,
    EXCERPT_LIMIT,
    PROTOCOL_VARIABLES,
    format_excerpt,
)

from .._errors import StateDirError
from .._packages.manifest import HandlerManifest
from .._values import Value
from ._cmdlog import INLINE_COLLECT, LogRecord, append_entry, captured, collect, outcome_line, title
from ._hints import failure_hint
from ._orphans import clear_marker, end_orphans, write_marker
from ._spawn import spawn, wait

if TYPE_CHECKING:
    from .base import CommandRequest

__all__ = [
    "CommandResult",
    "ProcessExecutor",
    "base_environment",
    "clear_marker",
    "end_orphans",
    "format_excerpt",
    "is_protocol_variable",
    "run_command",
    "write_log_entry",
]

_PROTOCOL_PREFIX = "AZURE_GUEST_AGENT_"

MARKER_AFTER = 0.002
"""Seconds a command runs before the marker naming its process group is written.

The marker records the group leader's start time, read from /proc/<pid>/stat, and that
read waits while the new process is still being set up by the kernel: about 0.6 ms when
made right after the spawn (more than the spawn itself), some 20 us a millisecond later.
A command that ends sooner needs no marker at all: its marker would be emptied when it
ends, and so would name no daemon it left behind either. What this costs: a runtime
killed within those 2 ms leaves the command unnamed (as it did during the slow read)."""


def is_protocol_variable(name: str) -> bool:
    """Whether `name` belongs to the protocol (the only variables ever logged)."""
    return name in PROTOCOL_VARIABLES or name.startswith(_PROTOCOL_PREFIX)


class CommandResult(Value):
    """What happened when a manifest command ran.

    `exit_code` is None when nothing ran (no command, or it could not be started) or when
    the command was killed on timeout; a death by signal N is reported as 128 + N, as a
    shell would. `excerpt` is the reference agent's `[stdout]...[stderr]...` tail, and
    `timeout` the limit the command ran under.
    """

    operation: Operation
    command: str
    exit_code: int | None
    timed_out: bool = False
    duration: float = 0.0
    excerpt: str = ""
    hint: str | None = None
    timeout: float | None = None
    # Why nothing ran and the step goes on anyway (an executor that cannot run it now).
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One human line: what happened, and the likely cause when one is known."""
        name = title(self.operation)
        if self.timed_out:
            after = self.timeout if self.timeout is not None else self.duration
            text = f"{name} timed out after {after:g} s and was killed"
        elif self.exit_code is None:
            if self.command.strip():
                text = f"{name} could not be started"
            else:
                text = f"{name} has no command ({self.operation.manifest_key}); nothing was run"
        elif self.exit_code == 0:
            text = f"{name} succeeded"
        else:
            text = f"{name} failed: exit code {self.exit_code}"
        return f"{text} ({self.hint})" if self.hint else text


def base_environment() -> dict[str, str]:
    """The runtime's environment without any protocol variable: what every command gets
    before its own variables.

    Removing them means an update-only variable never leaks into another command from
    the runtime's own environment.
    """
    return {name: value for name, value in os.environ.items() if not is_protocol_variable(name)}


def _child_environment(env: Mapping[str, str], base: Mapping[str, str] | None) -> dict[str, str]:
    """`base` (by default the runtime's environment, see `base_environment`), then `env`."""
    child = dict(base) if base is not None else base_environment()
    child.update(env)
    return child


async def run_command(
    *,
    handler_dir: Path,
    command: str,
    operation: Operation,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the command's limit: it is killed, the caller is not
    grace: float = 5.0,
    log_file: Path | None = None,
    log_limit: int = 10 * 1024 * 1024,
    marker: Path | None = None,
    base_env: Mapping[str, str] | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
) -> CommandResult:
    """Run a manifest command in `handler_dir` and report how it ended.

    `marker`, when given, names the command's process group for as long as it runs, so
    that a runtime killed meanwhile can end the orphan on its next start (`end_orphans`,
    given the same `boot_id_path`); afterwards it is left empty for the caller's next
    command (see `clear_marker`).
    `base_env` is the environment the command starts from (see `base_environment`; a
    caller running many commands computes it once).

    `env` holds the protocol variables for this command (`exthandler_sdk.protocol.Variable`).
    Failures of the command are results, not exceptions; a cancellation of the caller's
    scope kills the command's process group and propagates.
    """
    relative = command.strip().lstrip("/")
    if not relative:
        return CommandResult(operation=operation, command=command, exit_code=None)
    # Quoting changes nothing for an ordinary path and keeps one with spaces in one word.
    command_line = f"{shlex.quote(str(handler_dir))}/{relative}"
    child_env = _child_environment(env, base_env)
    started = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    argv = ["/bin/sh", "-c", command_line]
    out = err = None
    try:
        # On the event loop, although it blocks until the child has exec'd. CPython lets
        # go of the GIL for that wait, but a worker thread per spawn measured worse: an
        # install of 100 took about a sixth longer and more CPU (the thread's share of
        # Popen fights the loop for the GIL, and every command pays two hand-offs).
        out, err, child = spawn(argv, handler_dir, child_env)
        if isinstance(child, OSError):
            returncode: int | None = None
            timed_out = False
            hint: str | None = f"could not start /bin/sh in {handler_dir}: {child}"
        else:
            running = child
            named = False

            def name_the_group() -> None:
                """Write the marker naming the command's group (see `MARKER_AFTER`)."""
                nonlocal named
                assert marker is not None
                try:
                    write_marker(marker, running.pid, boot_id_path)
                except OSError as exc:
                    # Unnamed, the command could not be ended by a later runtime if this
                    # one were killed: `wait` ends it now, and the runtime's own file is
                    # the error.
                    raise StateDirError(
                        f"{marker}: cannot name the running command: {exc.strerror or exc}"
                    ) from exc
                named = True

            try:
                returncode = await wait(
                    child,
                    limit=timeout,
                    grace=grace,
                    on_running=None if marker is None else name_the_group,
                    running_after=MARKER_AFTER,
                )
            finally:
                if named and marker is not None:  # one syscall: not worth a thread
                    # Emptied, not removed: the handler's next command reuses the file
                    # (creating files is the dear part on some disks); an empty marker
                    # names nothing, and its owner removes it when done (`clear_marker`).
                    with contextlib.suppress(FileNotFoundError):
                        os.truncate(marker, 0)
            timed_out = returncode is None
            hint = failure_hint(returncode, handler_dir, relative)
        duration = time.monotonic() - start
        exit_code = (
            None if returncode is None else (128 - returncode if returncode < 0 else returncode)
        )
        record = LogRecord(
            started=started,
            operation=operation,
            command_line=f"/bin/sh -c {command_line}",
            env=_logged(child_env),
            outcome=outcome_line(exit_code, timed_out=timed_out, timeout=timeout, hint=hint),
            duration=duration,
        )
        # Each character takes at most 4 bytes of UTF-8, so this many bytes always suffice.
        keep = EXCERPT_LIMIT * 4
        if captured(out, err) <= INLINE_COLLECT:
            # The usual case: little output. Reading it here is cheaper than a thread hop.
            tails = collect(out, err, record, log_file, log_limit, keep)
        else:
            tails = await anyio.to_thread.run_sync(
                collect, out, err, record, log_file, log_limit, keep, abandon_on_cancel=False
            )
        excerpt = format_excerpt(*tails)
    finally:
        for stream in (out, err):
            if stream is not None:
                stream.close()
    return CommandResult(
        operation=operation,
        command=command,
        exit_code=exit_code,
        timed_out=timed_out,
        duration=duration,
        excerpt=excerpt,
        hint=hint,
        timeout=timeout,
    )


class ProcessExecutor(Value):
    """The `Executor` of classic packages: each command is a child process (see
    `run_command`), ended with its process group on timeout after `grace` seconds."""

    grace: float = 5.0
    boot_id_path: Path = BOOT_ID_PATH
    reads_handler_state: bool = True

    def accepts(self, manifest: HandlerManifest) -> bool:
        return True  # any manifest's commands can be run as processes

    def command_line(self, request: CommandRequest) -> str:
        return f"/bin/sh -c {request.directory}/{request.command.strip().lstrip('/')}"

    async def run(self, request: CommandRequest) -> CommandResult:
        timeout = request.timeout
        return await run_command(
            handler_dir=request.directory,
            command=request.command,
            operation=request.operation,
            env=request.env,
            timeout=COMMAND_TIMEOUTS[request.operation] if timeout is None else timeout,
            grace=self.grace,
            log_file=request.log_file,
            marker=request.marker,
            base_env=request.base_env,
            boot_id_path=self.boot_id_path,
        )


def write_log_entry(
    log_file: Path,
    *,
    started: dt.datetime,
    operation: Operation,
    command_line: str,
    env: Mapping[str, str],
    outcome: str,
    duration: float,
    limit: int = 10 * 1024 * 1024,
) -> None:
    """Append a CommandExecution.log entry for a command that has no output to keep
    (an in-process handler); failures to write are logged, not raised."""
    record = LogRecord(
        started=started,
        operation=operation,
        command_line=command_line,
        env=_logged(env),
        outcome=outcome,
        duration=duration,
    )
    append_entry(log_file, record, limit)


def _logged(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` a log may name: the protocol's (the rest may hold secrets)."""
    return {name: value for name, value in env.items() if is_protocol_variable(name)}
