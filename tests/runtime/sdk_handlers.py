"""Handlers written only against the public SDK, run by the runtime tests three ways."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import attrs
from exthandler_sdk import Context, Handler, HandlerError, hookimpl


@attrs.frozen
class CounterSettings:
    word: str
    times: int = 1


@attrs.frozen
class CounterSecrets:
    token: str


def record(ctx: Context[Any, Any], line: str = "") -> None:
    """One line per operation in `<logFolder>/operations.log` (the log dir outlives versions)."""
    with (ctx.environment.log_folder / "operations.log").open("a") as stream:
        stream.write(f"{ctx.operation.value} {ctx.handler_version} {line}".rstrip() + "\n")


class Counter(Handler[CounterSettings, CounterSecrets]):
    """Repeats a word, once its token checks out."""

    name = "Contoso.Testing.Counter"
    version = "1.0.0"

    async def install(self, ctx: Context[CounterSettings, CounterSecrets]) -> None:
        record(ctx, f"uninstall={ctx.uninstall_exit_code}")

    async def enable(self, ctx: Context[CounterSettings, CounterSecrets]) -> None:
        record(ctx, f"seq={ctx.sequence_number}")
        if ctx.protected.token != "open-sesame":
            raise HandlerError(53, "the token is wrong")
        await ctx.status.transitioning("counting")
        words = " ".join([ctx.settings.word] * ctx.settings.times)
        ctx.status.substatus("Words", "success", words)
        await ctx.status.success(f"counted {ctx.settings.times} at seq {ctx.sequence_number}")

    async def disable(self, ctx: Context[CounterSettings, CounterSecrets]) -> None:
        record(ctx)

    async def update(self, ctx: Context[CounterSettings, CounterSecrets]) -> None:
        record(
            ctx,
            f"from={ctx.updating_from_version} to={ctx.update_to_version}"
            f" disable={ctx.disable_exit_code}",
        )

    async def uninstall(self, ctx: Context[CounterSettings, CounterSecrets]) -> None:
        record(ctx)


class CounterNext(Counter):
    """The next hotfix."""

    version = "1.0.1"


class Sleeper(Handler[None, None]):
    """An enable that never finishes on its own."""

    name = "Contoso.Testing.Sleeper"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        await anyio.sleep(3600)


class CounterPlugin:
    """Registers Counter the way a third-party plugin would."""

    @hookimpl
    def exthandler_register_handlers(self) -> list[type[Handler[Any, Any]]]:
        return [Counter]


class QuickSleeper(Sleeper):
    """Declares its own enable limit: half a second."""

    command_timeouts: ClassVar[Mapping[str, float]] = {"enable": 0.5}


class Crasher(Handler[None, None]):
    """Kills its own process (the runtime, in process) in install while a flag file exists
    in its log folder: a runtime killed in the middle of a step."""

    name = "Contoso.Testing.Crasher"
    version = "1.0.0"

    async def install(self, ctx: Context[None, None]) -> None:
        record(ctx)
        flag = ctx.environment.log_folder / "crash"
        if flag.exists():
            flag.unlink()
            os.kill(os.getpid(), signal.SIGKILL)

    async def enable(self, ctx: Context[None, None]) -> None:
        record(ctx)
