"""SDK handlers the testing kit is tested on (written only against the public SDK)."""

from __future__ import annotations

import json

import anyio
import attrs
from exthandler_sdk import Context, Handler, HandlerError


@attrs.frozen
class GreeterSettings:
    greeting: str
    times: int = 1


@attrs.frozen
class GreeterSecrets:
    token: str


class Greeter(Handler[GreeterSettings, GreeterSecrets]):
    """Greets, once its token checks out; reports a heartbeat and an event."""

    name = "Contoso.Testing.Greeter"
    version = "1.0.0"
    report_heartbeat = True

    async def install(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        ctx.log.info("installing %s", ctx.handler_version)

    async def enable(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        if ctx.protected.token != "open-sesame":
            raise HandlerError(53, "the token is wrong")
        await ctx.status.transitioning("greeting")
        words = " ".join([ctx.settings.greeting] * ctx.settings.times)
        (ctx.handler_dir / "greeting.txt").write_text(words + "\n")
        ctx.status.substatus("Greeting", "success", words)
        await ctx.heartbeat.ready("greeted")
        await ctx.events.info(f"greeted {ctx.settings.times} times")
        ctx.log.info("greeted at seq %d", ctx.sequence_number)
        await ctx.status.success(f"greeted at seq {ctx.sequence_number}")

    async def update(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        ctx.log.info("update from %s to %s", ctx.updating_from_version, ctx.update_to_version)


class GreeterNext(Greeter):
    """The next hotfix."""

    version = "1.0.1"


class Plain(Handler[None, None]):
    """No settings at all."""

    name = "Contoso.Testing.Plain"
    version = "2.0.0"


class Broken(Handler[None, None]):
    """An enable that fails unexpectedly."""

    name = "Contoso.Testing.Broken"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        raise ValueError("boom")


class Probe(Handler[None, None]):
    """Reports the anyio backend its enable ran on ("asyncio" or "trio")."""

    name = "Contoso.Testing.Probe"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        library = anyio.get_cancelled_exc_class().__module__.partition(".")[0]
        await ctx.status.success(f"ran on {library}")


class Governed(Handler[None, None]):
    """Reports the runtimePolicy the administrator's policy gives it."""

    name = "Contoso.Testing.Governed"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        await ctx.status.success(json.dumps(ctx.runtime_policy(), sort_keys=True))
