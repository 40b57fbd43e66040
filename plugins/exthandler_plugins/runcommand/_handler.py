"""`Microsoft.CPlat.Core.RunCommandHandlerLinux`: managed Run Command (v2).

A multi-config handler: each named run command (extension) of the handler has its own
settings, sequence numbers, status file and run-once state (the SDK keeps them apart by
`ctx.extension_name`) and its own runs under `<handler_dir>/runcommand/<name>/<seq>/`.

Enable resolves the settings (`_settings`), fetches `source.scriptUri` with the shared
download code (or takes `source.script`), writes `script.sh` and a launcher, `launch.sh`,
that sets the unnamed parameters as the positional arguments and sources the script, and
runs `bash -c '. ./launch.sh'` (`sh` without bash) in its own process group with the named
parameters in its environment (`.._shared.process`): no parameter, protected or not, is
ever in a process's arguments. With `runAsUser` the script runs as that user, from a
private work dir the user owns; the run dir (output, pid record) stays the handler's.
While it runs, the status is `transitioning` with the instance view of the run; at the
end it is `success` (or `error`, `warning`: see `_report`) with the final one. With
`asyncExecution` enable reports `success` (`Pending`) at once and all of that happens in
the SDK's background worker (`run_in_background`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread
import attrs
from exthandler_sdk import Context, Handler, HandlerError, StatusLevel, Substatus
from exthandler_sdk.protocol import STATUS_MESSAGE_LIMIT, utc_timestamp

from .._shared import process as _process
from .._shared.download import DownloadError, DownloadPolicy, download_all
from .._shared.redact import redact_text
from . import _upload
from ._settings import (
    DEFAULT_TIMEOUT,
    SCRIPT_NAME,
    Plan,
    RunCommandProtectedSettings,
    RunCommandSettings,
    resolve,
)

__all__ = [
    "LAUNCHER_NAME",
    "ROOT_NAME",
    "STATUS_INTERVAL",
    "TAIL_LIMIT",
    "TIMEOUT_CODE",
    "ExecutionState",
    "RunCommand",
    "instance_view",
]

ROOT_NAME = "runcommand"
"""The dir of the handler dir that holds every run."""
LAUNCHER_NAME = "launch.sh"
STATUS_INTERVAL = 10.0
"""Seconds between two `transitioning` reports while the script runs."""
TAIL_LIMIT = 4096
"""Characters of stdout/stderr kept in the `StdOut` and `StdErr` substatus."""
TIMEOUT_CODE = 1011
"""The status code when the script outlives its timeout (the protocol's "timed out")."""
_UNNAMED = "-"  # the dir of an extension the agent names none for (no valid name is "-")
_POLL = 0.05
_SHELLS = ("/bin/bash", "/bin/sh")

Ctx = Context[RunCommandSettings, RunCommandProtectedSettings]


class ExecutionState(enum.StrEnum):
    """`executionState` of the instance view, as the reference handler names them."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELED = "Canceled"


def instance_view(
    state: ExecutionState,
    message: str,
    *,
    output: str = "",
    error: str = "",
    exit_code: int = 0,
    start: str = "",
    end: str = "",
    limit: int = STATUS_MESSAGE_LIMIT,
) -> str:
    """The status message: the JSON instance view of a run, at most `limit` characters.

    `output` and `error` keep their tails: each gets half of the room the other fields
    leave, and what one does not need goes to the other (the message limit of the status
    file is what the agent keeps of a message, so the JSON is never cut elsewhere).
    """

    def render(out: str, err: str) -> str:
        return json.dumps(
            {
                "executionState": str(state),
                "executionMessage": message,
                "output": out,
                "error": err,
                "exitCode": exit_code,
                "startTime": start,
                "endTime": end,
            },
            ensure_ascii=False,
        )

    room = limit - len(render("", ""))
    if room < 0:  # only a very long message does this: it is cut, keeping its start
        message = message[: max(0, len(message) + room - 4)] + " ..."
        room = limit - len(render("", ""))
    out_room = max(room // 2, room - _encoded(error))
    out = _last(output, _fit(output, out_room))
    err = _last(error, _fit(error, room - _encoded(out)))
    return render(out, err)


def _encoded(text: str) -> int:
    """The characters `text` takes in the JSON message (escapes included)."""
    return len(json.dumps(text, ensure_ascii=False)) - 2


def _fit(text: str, room: int) -> int:
    """How many trailing characters of `text` take at most `room` characters in JSON."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded(text[len(text) - middle :]) <= room:
            low = middle
        else:
            high = middle - 1
    return low


def _last(text: str, count: int) -> str:
    return text[len(text) - count :] if count > 0 else ""


@attrs.define(kw_only=True)
class _Run:
    """One run of one sequence number of one extension."""

    directory: Path
    start: str = ""
    end: str = ""

    def tail(self, file: str, limit: int = TAIL_LIMIT) -> str:
        return redact_text(_process.tail(self.directory / file, limit))


class RunCommand(Handler[RunCommandSettings, RunCommandProtectedSettings]):
    """Runs a script with parameters, as a chosen user, once per sequence number."""

    name = "Microsoft.CPlat.Core.RunCommandHandlerLinux"
    version = "1.3.0"
    supports_multiple_extensions = True
    download_policy: ClassVar[DownloadPolicy] = DownloadPolicy(user_agent="exthandler-runcommand")
    # In process a script may run for the default timeout (plus a little for the
    # download); a runtime's own command-timeout settings still override it.
    command_timeouts: ClassVar[Mapping[str, float]] = {"enable": DEFAULT_TIMEOUT + 60.0}

    async def enable(self, ctx: Ctx) -> None:
        plan = resolve(ctx.settings, ctx.protected)
        account = _account(plan)
        if not plan.async_execution:
            await self._run_plan(ctx, plan, account)
            return
        # The enable reports at once; the worker starts once that report is written, and
        # its reports follow it.
        await ctx.status.success(
            instance_view(
                ExecutionState.PENDING,
                "Execution continues in the background",
                start=utc_timestamp(),
            )
        )
        pid = await ctx.start_worker(self.run_in_background)
        ctx.log.info("the script runs in background worker %d", pid)

    async def run_in_background(self, ctx: Ctx) -> None:
        """The run of an `asyncExecution` run command, in the SDK's background worker."""
        plan = resolve(ctx.settings, ctx.protected)
        await self._run_plan(ctx, plan, _account(plan))

    async def _run_plan(self, ctx: Ctx, plan: Plan, account: _process.Account | None) -> None:
        """Fetch and run the script, reporting as it goes and at the end."""
        _stop_older(ctx)
        run = _Run(directory=self._fresh_dir(ctx), start=utc_timestamp())
        await ctx.status.transitioning(
            instance_view(ExecutionState.PENDING, "Execution pending", start=run.start)
        )
        try:
            await self._fetch(ctx, plan, run)
        except DownloadError as exc:
            run.end = utc_timestamp()
            message = instance_view(
                ExecutionState.FAILED, exc.message, exit_code=-1, start=run.start, end=run.end
            )
            ctx.log.error("%s", exc.message)
            await ctx.status.error(message, exc.code)
            return
        await self._execute(ctx, plan, run, account)
        self._clean_older(ctx)

    async def disable(self, ctx: Ctx) -> None:
        """Stop this extension's running script, and remove its runs (scripts may hold
        secrets); the others' runs are theirs."""
        root = _extension_root(ctx)
        if _stop_all(root):
            ctx.log.info("stopped a running script")
        await anyio.to_thread.run_sync(shutil.rmtree, root, True)

    async def uninstall(self, ctx: Ctx) -> None:
        root = ctx.handler_dir / ROOT_NAME
        if root.is_dir():
            for entry in root.iterdir():
                _stop_all(entry)
        await anyio.to_thread.run_sync(shutil.rmtree, root, True)

    def _fresh_dir(self, ctx: Ctx) -> Path:
        return _process.fresh_run_dir(_extension_root(ctx), ctx.sequence_number)

    async def _fetch(self, ctx: Ctx, plan: Plan, run: _Run) -> None:
        """Put the script in the run dir as `script.sh` (0700): written, or downloaded."""
        if plan.download is None:
            assert plan.script is not None
            _process.write_private(run.directory / SCRIPT_NAME, plan.script)
            return
        await download_all(
            [plan.download],
            run.directory,
            policy=type(self).download_policy,
            storage=None,
            log=ctx.log,
        )

    async def _execute(
        self, ctx: Ctx, plan: Plan, run: _Run, account: _process.Account | None
    ) -> None:
        budget = max(0.0, min(plan.timeout, ctx.remaining()))
        env = _environment(ctx, plan)
        work = await anyio.to_thread.run_sync(_prepare, run.directory, plan, account)
        shell = next((path for path in _SHELLS if os.access(path, os.X_OK)), "/bin/sh")
        try:
            # The thread is waited for even when we are cancelled: the process it starts
            # is always ours to stop.
            process = await anyio.to_thread.run_sync(
                lambda: _process.start(
                    run.directory,
                    f". ./{LAUNCHER_NAME}",
                    env,
                    cwd=work,
                    shell=shell,
                    account=account,
                )
            )
            try:
                ctx.log.info(
                    "script started in %s (process group %d%s)",
                    work,
                    process.pid,
                    "" if account is None else f", as {account.name}",
                )
                code = await self._wait(ctx, process, run, time.monotonic() + budget)
            finally:
                # Whatever ends the wait (the timeout, or our own cancellation), the
                # group goes.
                if process.poll() is None:
                    _process.kill_group(process.pid)
                    process.wait()
            with contextlib.suppress(OSError):
                (run.directory / _process.PID_FILE).unlink()
        finally:
            with contextlib.suppress(OSError):  # it holds the parameters, secrets included
                (run.directory / LAUNCHER_NAME).unlink()
            if work != run.directory:
                await anyio.to_thread.run_sync(shutil.rmtree, work, True)
        run.end = utc_timestamp()
        problems = await self._upload_streams(ctx, plan, run)
        await self._report(ctx, plan, run, code, budget, problems)

    async def _wait(
        self, ctx: Ctx, process: subprocess.Popen[bytes], run: _Run, deadline: float
    ) -> int | None:
        """The script's exit status, or None when `deadline` passed first."""
        await self._progress(ctx, run)
        return await _process.wait_for_exit(
            process,
            deadline,
            report=lambda: self._progress(ctx, run),
            every=STATUS_INTERVAL,
            poll=_POLL,
        )

    async def _progress(self, ctx: Ctx, run: _Run) -> None:
        await ctx.status.transitioning(
            self._view(run, ExecutionState.RUNNING, "Execution in progress", 0),
            substatus=_tails(run, StatusLevel.TRANSITIONING),
        )

    def _view(self, run: _Run, state: ExecutionState, message: str, code: int) -> str:
        return instance_view(
            state,
            message,
            output=run.tail(_process.STDOUT_FILE),
            error=run.tail(_process.STDERR_FILE),
            exit_code=code,
            start=run.start,
            end=run.end,
        )

    async def _upload_streams(self, ctx: Ctx, plan: Plan, run: _Run) -> list[str]:
        """Upload stdout and stderr to the blobs the settings name; what failed."""
        problems: list[str] = []
        for target, file in (
            (plan.output_blob, _process.STDOUT_FILE),
            (plan.error_blob, _process.STDERR_FILE),
        ):
            if target is None:
                continue
            path = run.directory / file
            problem = await anyio.to_thread.run_sync(_upload.upload, target, path)
            if problem is None:
                ctx.log.info("uploaded %s to %s", file, target.redacted)
            else:
                ctx.log.error("uploading %s failed: %s", file, problem)
                problems.append(f"uploading {file} failed: {problem}")
        return problems

    async def _report(
        self,
        ctx: Ctx,
        plan: Plan,
        run: _Run,
        code: int | None,
        budget: float,
        problems: list[str],
    ) -> None:
        """The final status: `success` with the exit code in the instance view, unless
        the script timed out, or failed with `treatFailureAsDeploymentFailure`: then
        `error` (code 1011 for a timeout, the exit code for a failure). An upload that
        failed turns a `success` into a `warning` and is named in the message."""
        if code is None:
            state, level, status_code = ExecutionState.TIMED_OUT, StatusLevel.ERROR, TIMEOUT_CODE
            message = f"Execution timed out after {budget:g} seconds; the script was killed"
            exit_code = -1
        elif code == 0:
            state, level, status_code = ExecutionState.SUCCEEDED, StatusLevel.SUCCESS, 0
            message, exit_code = "Execution completed", 0
        else:
            state, exit_code = ExecutionState.FAILED, code
            message = f"Execution completed with exit code {code}"
            level = StatusLevel.ERROR if plan.fail_on_error else StatusLevel.SUCCESS
            status_code = code if plan.fail_on_error else 0
        if problems:
            message = "; ".join([message, *problems])
            if level is StatusLevel.SUCCESS:
                level = StatusLevel.WARNING
        view = self._view(run, state, message, exit_code)
        substatus = _tails(run, level)
        if level is StatusLevel.WARNING:
            ctx.log.warning("%s", message)
            await ctx.status.warning(view, substatus=substatus)
        elif level is StatusLevel.SUCCESS:
            ctx.log.info("%s", message)
            await ctx.status.success(view, substatus=substatus)
        else:
            ctx.log.error("%s", message)
            await ctx.status.error(view, status_code, substatus=substatus)

    def _clean_older(self, ctx: Ctx) -> None:
        """Remove this extension's runs of older sequence numbers (they may hold secrets)."""
        root = _extension_root(ctx)
        for entry in root.iterdir():
            if entry.name.isdigit() and int(entry.name) < ctx.sequence_number:
                _process.stop_recorded(entry)
                shutil.rmtree(entry, ignore_errors=True)


def _stop_older(ctx: Ctx) -> None:
    """Stop the scripts this extension still runs for older sequence numbers (a background
    run, or one whose enable was superseded)."""
    root = _extension_root(ctx)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.isdigit() and int(entry.name) < ctx.sequence_number:
                _process.stop_recorded(entry)


def _extension_root(ctx: Ctx) -> Path:
    return ctx.handler_dir / ROOT_NAME / (ctx.extension_name or _UNNAMED)


def _account(plan: Plan) -> _process.Account | None:
    """Whom the script runs as: None for the handler's own user."""
    entry = plan.run_as
    if entry is None or entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise HandlerError(
            53,
            f"settings.runAsUser: running the script as {entry.pw_name!r} needs the handler "
            "to run as root",
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _process.Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)


def _environment(ctx: Ctx, plan: Plan) -> dict[str, str]:
    env = {**os.environ, **ctx.env}
    if plan.run_as is not None:
        entry: pwd.struct_passwd = plan.run_as
        env.update(
            HOME=entry.pw_dir,
            USER=entry.pw_name,
            LOGNAME=entry.pw_name,
            SHELL=entry.pw_shell or "/bin/sh",
        )
    env.update(plan.env)
    return env


def _launcher(args: tuple[str, ...]) -> bytes:
    """Sets the positional arguments, then sources the script: they never appear in any
    process's argument list."""
    words = " ".join(shlex.quote(arg) for arg in args)
    return f"set -- {words}\n. ./{SCRIPT_NAME}\n".encode()


def _prepare(directory: Path, plan: Plan, account: _process.Account | None) -> Path:
    """Write the launcher beside the script and return the dir the script runs in: the
    run dir, or for another user a fresh private dir that user owns, holding copies."""
    if account is None:
        _process.write_private(directory / LAUNCHER_NAME, _launcher(plan.args))
        return directory
    # The run dir may sit where the user cannot reach; and what it holds (the pid record
    # disable trusts, the output files) must stay out of the user's hands.
    work = Path(tempfile.mkdtemp(prefix="runcommand-"))
    try:
        _process.write_private(work / LAUNCHER_NAME, _launcher(plan.args))
        shutil.copyfile(directory / SCRIPT_NAME, work / SCRIPT_NAME, follow_symlinks=False)
        # Nobody but us can reach the (0700, ours) dir yet: the names are ours.
        for path in (work / LAUNCHER_NAME, work / SCRIPT_NAME, work):
            os.chmod(path, 0o700)
            os.chown(path, account.uid, account.gid, follow_symlinks=False)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _tails(run: _Run, level: StatusLevel) -> list[Substatus]:
    return [
        Substatus(name=name, status=level, message=run.tail(file))
        for name, file in (("StdOut", _process.STDOUT_FILE), ("StdErr", _process.STDERR_FILE))
    ]


def _stop_all(root: Path) -> bool:
    stopped = False
    if root.is_dir() and not root.is_symlink():
        for entry in root.iterdir():
            stopped = _process.stop_recorded(entry) or stopped
    return stopped
