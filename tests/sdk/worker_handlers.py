"""Handlers that start background workers (`ctx.start_worker`), for the worker tests.

Each worker appends `<pid> <seq> <what>` lines to `<handler_dir>/workers.log`, so that the
tests see which process did what and can stop every worker they caused.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import anyio
import attrs
from exthandler_sdk import Context, Handler

NAME = "Contoso.Samples.Ticker"


@attrs.frozen
class Job:
    note: str = ""
    action: str = "tick"


def note(ctx: Context[Any, Any], what: str) -> None:
    line = f"{os.getpid()} {ctx.sequence_number} {what}\n"
    with open(ctx.handler_dir / "workers.log", "a", encoding="utf-8") as file:
        file.write(line)


def _status_message(ctx: Context[Any, Any]) -> str:
    path = ctx.environment.status_folder / f"{ctx.sequence_number}.status"
    try:
        return str(json.loads(path.read_bytes())[0]["status"]["formattedMessage"]["message"])
    except (OSError, ValueError, LookupError):
        return "(none)"


class Ticker(Handler[Job, None]):
    """Enable starts `tick` in a worker, which rewrites the status until it is stopped."""

    name = NAME
    version = "1.0.0"
    enable_runs_on_same_sequence: ClassVar[bool] = True

    async def enable(self, ctx: Context[Job, None]) -> None:
        action = ctx.settings.action
        if action == "private":
            await ctx.start_worker(self._hidden)
        elif action == "missing":
            await ctx.start_worker(self.vanished)
        else:
            pid = await ctx.start_worker(self.fail if action == "fail" else self.tick)
            note(ctx, f"enable started {pid}")
            if action == "linger":
                # Give a worker that would not wait for this enable the time to report.
                with anyio.move_on_after(2.0):
                    log = ctx.handler_dir / "workers.log"
                    while " worker " not in log.read_text():  # noqa: ASYNC110 - another process's
                        await anyio.sleep(0.05)
            # Written after the launch: the worker must still come after it.
            await ctx.status.success(f"enable {ctx.sequence_number} done")

    async def disable(self, ctx: Context[Job, None]) -> None:
        note(ctx, "disable")

    async def uninstall(self, ctx: Context[Job, None]) -> None:
        note(ctx, "uninstall")

    async def tick(self, ctx: Context[Job, None]) -> None:
        note(ctx, f"worker saw {_status_message(ctx)!r}")
        if ctx.settings.action == "linger":
            await ctx.status.success(f"worker {ctx.sequence_number} first")
        count = 0
        while True:
            count += 1
            await ctx.status.success(f"worker {ctx.sequence_number} {ctx.settings.note} {count}")
            await anyio.sleep(0.05)

    async def fail(self, ctx: Context[Job, None]) -> None:
        note(ctx, "worker failing")
        raise RuntimeError("the worker broke")

    async def _hidden(self, ctx: Context[Job, None]) -> None:
        """Not a worker: private."""

    async def vanished(self, ctx: Context[Job, None]) -> None:
        """Replaced below by a method of another name, which no worker can find."""


async def _elsewhere(self: Ticker, ctx: Context[Job, None]) -> None:
    """Found on the class under another name than its own."""


Ticker.vanished = _elsewhere  # type: ignore[method-assign]
