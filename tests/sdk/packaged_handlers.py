"""Handlers written only against the public SDK, to be packaged and run out of process.

Every operation appends one line to `<logFolder>/operations.log` (the log folder belongs
to the handler, not to one version, so it outlives handler dirs), so tests can check what
ran, in which version and with which protocol variables, across an upgrade.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import cattrs
import exthandler_sdk
import pluggy
from exthandler_sdk import Context, Handler, HandlerError

EXPECTED_TOKEN = "s3cret"


@attrs.frozen
class GreeterSettings:
    greeting: str
    repeat: int = 1


@attrs.frozen
class GreeterSecrets:
    token: str


def _record(ctx: Context[Any, Any], line: str) -> None:
    with (ctx.environment.log_folder / "operations.log").open("a") as stream:
        stream.write(f"{ctx.handler_version} {ctx.operation.value} {line}\n")


class Greeter(Handler[GreeterSettings, GreeterSecrets]):
    """Greets as its public settings say, once its protected token checks out."""

    name = "Contoso.Testing.Greeter"
    version = "1.0.0"

    async def install(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        _record(ctx, f"seq={ctx.sequence_number} uninstall={ctx.uninstall_exit_code}")

    async def enable(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        _record(ctx, f"seq={ctx.sequence_number} greeting={ctx.settings.greeting}")
        if ctx.protected.token != EXPECTED_TOKEN:
            raise HandlerError(53, "the token is wrong")
        await ctx.status.transitioning("greeting")
        ctx.status.substatus(
            "Greeting", "success", " ".join([ctx.settings.greeting] * ctx.settings.repeat)
        )
        # Where every import came from: the test checks that it is the package's lib/.
        origins = [
            sys.executable,
            exthandler_sdk.__file__,
            attrs.__file__,
            cattrs.__file__,
            pluggy.__file__,
        ]
        ctx.status.substatus("Origins", "success", "\n".join(str(origin) for origin in origins))
        await ctx.status.success(
            f"{ctx.settings.greeting} from {ctx.handler_version} at seq {ctx.sequence_number}"
        )

    async def disable(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        _record(ctx, f"seq={ctx.sequence_number}")

    async def update(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        _record(
            ctx,
            f"from={ctx.updating_from_version} to={ctx.update_to_version} "
            f"disable={ctx.disable_exit_code}",
        )

    async def uninstall(self, ctx: Context[GreeterSettings, GreeterSecrets]) -> None:
        _record(ctx, f"seq={ctx.sequence_number}")


class GreeterNext(Greeter):
    """The next hotfix of Greeter: same code, a higher version."""

    version = "1.0.1"


class Flagged(Handler[None, None]):
    """Every manifest option set away from its default."""

    name = "Contoso.Testing.Flagged"
    version = "2.1"
    report_heartbeat = True
    supports_multiple_extensions = True
    update_mode = "UpdateWithoutInstall"
    continue_on_update_failure = True
    enable_runs_on_same_sequence = True


class Unnamed(Handler[None, None]):
    """Not packageable: its name has no publisher."""

    name = "Greeter"
    version = "1.0"
