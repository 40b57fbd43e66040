"""Contoso.Samples.Greeter: greets someone, once a passphrase checks out."""

from __future__ import annotations

from typing import Any

import attrs
from exthandler_sdk import Context, Handler, HandlerError, hookimpl


@attrs.frozen
class Settings:
    """Public settings: readable by anyone who can read the goal state."""

    name: str
    """Who to greet."""
    times: int = 1
    """How many times to greet them (1 to 10)."""


@attrs.frozen
class Secrets:
    """Protected settings: encrypted in the goal state and on disk."""

    passphrase: str


class Greeter(Handler[Settings, Secrets]):
    """Greets `settings.name`, `settings.times` times."""

    name = "Contoso.Samples.Greeter"
    version = "1.0.0"

    async def install(self, ctx: Context[Settings, Secrets]) -> None:
        ctx.log.info("installing version %s", ctx.handler_version)

    async def enable(self, ctx: Context[Settings, Secrets]) -> None:
        if not 1 <= ctx.settings.times <= 10:
            raise HandlerError(53, f"times must be between 1 and 10, got {ctx.settings.times}")
        if len(ctx.protected.passphrase) < 8:
            raise HandlerError(53, "the passphrase must have at least 8 characters")
        await ctx.status.transitioning(f"greeting {ctx.settings.name}")
        greeting = f"Hello, {ctx.settings.name}!"
        ctx.status.substatus("Greeting", "success", " ".join([greeting] * ctx.settings.times))
        await ctx.events.info(f"greeted {ctx.settings.times} time(s)")
        await ctx.status.success(f"greeted {ctx.settings.name} (version {ctx.handler_version})")

    async def update(self, ctx: Context[Settings, Secrets]) -> None:
        ctx.log.info("updating from %s", ctx.updating_from_version)


@hookimpl
def exthandler_register_handlers() -> list[type[Handler[Any, Any]]]:
    """Lets a runtime that loads this module as a plugin run Greeter in process."""
    return [Greeter]
