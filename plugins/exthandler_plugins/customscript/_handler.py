"""`Microsoft.Azure.Extensions.CustomScript`: fetch files, then run a script or command.

Enable resolves the settings (`_settings`), downloads `fileUris` into
`<handler_dir>/download/<seq>/` (`.._shared.download`), writes an inline `script` there as
`script.sh` and a protected `commandToExecute` as `command.sh` (both 0700, so that no
secret shows in any process's arguments), and runs the command in that directory
(`.._shared.process`), reporting
`transitioning` with the output's tails while it runs. The same code runs in process and
packaged, in the foreground of the enable command: the whole enable is bounded by
`SCRIPT_BUDGET` and by the command's own deadline, whichever comes first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread
from exthandler_sdk import Context, Handler, StatusLevel, Substatus

from .._shared import process as _process
from .._shared.download import DownloadPolicy, download_all
from .._shared.redact import redact_text
from ._settings import CustomScriptProtectedSettings, CustomScriptSettings, Plan, resolve

__all__ = ["SCRIPT_BUDGET", "STATUS_INTERVAL", "TAIL_LIMIT", "TIMEOUT_CODE", "CustomScript"]

SCRIPT_BUDGET = 90 * 60.0
"""Seconds an enable may take, downloads included (the platform's CustomScript budget)."""
STATUS_INTERVAL = 10.0
"""Seconds between two `transitioning` reports while the script runs."""
TAIL_LIMIT = 4096
"""Bytes of stdout/stderr kept in each substatus."""
TIMEOUT_CODE = 1011
"""The status code when the script outlives its budget (the protocol's "timed out")."""
_POLL = 0.05
_SCRIPT_NAME = "script.sh"
_COMMAND_NAME = "command.sh"

Ctx = Context[CustomScriptSettings, CustomScriptProtectedSettings]


def download_root(handler_dir: Path) -> Path:
    return handler_dir / "download"


class CustomScript(Handler[CustomScriptSettings, CustomScriptProtectedSettings]):
    """Runs a script on the machine after downloading the files it needs."""

    name = "Microsoft.Azure.Extensions.CustomScript"
    version = "2.1.0"
    download_policy: ClassVar[DownloadPolicy] = DownloadPolicy(user_agent="exthandler-customscript")
    # In process, a script may run for the whole budget the platform documents for
    # CustomScript-like extensions (plus a little for the downloads' own deadline).
    command_timeouts: ClassVar[Mapping[str, float]] = {"enable": SCRIPT_BUDGET + 60.0}

    async def enable(self, ctx: Ctx) -> None:
        started = time.monotonic()
        plan = resolve(ctx.settings, ctx.protected)
        directory = self._fresh_dir(ctx)
        if plan.files:
            count = len(plan.files)
            await ctx.status.transitioning(f"downloading {count} file{'s' * (count > 1)}")
            await download_all(
                plan.files,
                directory,
                policy=type(self).download_policy,
                storage=plan.storage,
                log=ctx.log,
            )
            if plan.dos2unix:
                for source in plan.files:
                    _convert(directory / source.name)
        command = self._command(plan, directory)
        await self._run(ctx, directory, command, started)
        self._clean_older(ctx)

    async def disable(self, ctx: Ctx) -> None:
        if _stop_all(download_root(ctx.handler_dir)):
            ctx.log.info("stopped a running script")

    async def uninstall(self, ctx: Ctx) -> None:
        root = download_root(ctx.handler_dir)
        _stop_all(root)
        await anyio.to_thread.run_sync(shutil.rmtree, root, True)

    def _fresh_dir(self, ctx: Ctx) -> Path:
        return _process.fresh_run_dir(download_root(ctx.handler_dir), ctx.sequence_number)

    def _command(self, plan: Plan, directory: Path) -> str:
        """What `/bin/sh -c` runs: a public command as given; a script, or a command from
        the protected settings, from a 0700 file in the 0700 download dir (the arguments
        of a process are readable by every user of the machine)."""
        if plan.script is not None:
            data = _process.dos2unix(plan.script) if plan.dos2unix else plan.script
            _process.write_private(directory / _SCRIPT_NAME, data)
            return f"./{_SCRIPT_NAME}"
        assert plan.command is not None
        if not plan.command_protected:
            return plan.command
        _process.write_private(directory / _COMMAND_NAME, os.fsencode(plan.command))
        # Sourced by the shell that `-c` starts, so that it runs as `/bin/sh -c <command>`
        # would: same $0, no arguments, same exit status, `exit` ends it.
        return f". ./{_COMMAND_NAME}"

    async def _run(self, ctx: Ctx, directory: Path, command: str, started: float) -> None:
        budget = max(0.0, min(SCRIPT_BUDGET - (time.monotonic() - started), ctx.remaining()))
        env = {**os.environ, **ctx.env}
        # The thread is waited for even when we are cancelled: the process it starts is
        # always ours to stop.
        process = await anyio.to_thread.run_sync(_process.start, directory, command, env)
        try:
            ctx.log.info("script started in %s (process group %d)", directory, process.pid)
            await ctx.status.transitioning(
                "the script is running", substatus=_tails(directory, StatusLevel.TRANSITIONING)
            )
            code = await _wait(ctx, process, directory, time.monotonic() + budget)
        finally:
            # Whatever ends the wait (the budget, or our own cancellation), the group goes.
            if process.poll() is None:
                _process.kill_group(process.pid)
                process.wait()
        with contextlib.suppress(OSError):
            (directory / _process.PID_FILE).unlink()
        if code is None:
            minutes = budget / 60
            await self._report(
                ctx,
                directory,
                TIMEOUT_CODE,
                f"Enable failed: the script did not finish within {minutes:g} minutes and "
                "was killed",
            )
        elif code == 0:
            await self._report(ctx, directory, 0, "Enable succeeded: the script exited with 0")
        else:
            await self._report(
                ctx, directory, code, f"Enable failed: the script exited with code {code}"
            )

    async def _report(self, ctx: Ctx, directory: Path, code: int, headline: str) -> None:
        level = StatusLevel.SUCCESS if code == 0 else StatusLevel.ERROR
        out = _process.tail(directory / _process.STDOUT_FILE, TAIL_LIMIT)
        err = _process.tail(directory / _process.STDERR_FILE, TAIL_LIMIT)
        message = redact_text(f"{headline}\n[stdout]\n{out}\n\n[stderr]\n{err}")
        substatus = _tails(directory, level)
        if level is StatusLevel.SUCCESS:
            ctx.log.info("script exited with 0")
            await ctx.status.success(message, substatus=substatus)
        else:
            ctx.log.error("%s", headline)
            await ctx.status.error(message, code, substatus=substatus)

    def _clean_older(self, ctx: Ctx) -> None:
        """Remove the download dirs of older sequence numbers (they may hold secrets)."""
        root = download_root(ctx.handler_dir)
        for entry in root.iterdir():
            if entry.name.isdigit() and int(entry.name) < ctx.sequence_number:
                _process.stop_recorded(entry)
                shutil.rmtree(entry, ignore_errors=True)


async def _wait(
    ctx: Ctx, process: subprocess.Popen[bytes], directory: Path, deadline: float
) -> int | None:
    """The script's exit status, or None when `deadline` passed first."""

    async def report() -> None:
        await ctx.status.transitioning(
            "the script is running",
            substatus=_tails(directory, StatusLevel.TRANSITIONING),
        )

    return await _process.wait_for_exit(
        process, deadline, report=report, every=STATUS_INTERVAL, poll=_POLL
    )


def _tails(directory: Path, level: StatusLevel) -> list[Substatus]:
    return [
        Substatus(
            name=name,
            status=level,
            message=redact_text(_process.tail(directory / file, TAIL_LIMIT)),
        )
        for name, file in (("StdOut", _process.STDOUT_FILE), ("StdErr", _process.STDERR_FILE))
    ]


def _convert(path: Path) -> None:
    data = path.read_bytes()
    converted = _process.dos2unix(data)
    if converted != data:
        path.write_bytes(converted)


def _stop_all(root: Path) -> bool:
    stopped = False
    if root.is_dir():
        for entry in root.iterdir():
            stopped = _process.stop_recorded(entry) or stopped
    return stopped
