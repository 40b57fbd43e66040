"""Handler classes the SDK tests run, in process and as `python -m exthandler_sdk run`,
and the temporary handler-dir layout they run in."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.abc
import attrs
from exthandler_sdk import Context, Handler, HandlerError, StatusLevel, Substatus

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "Contoso.Samples.Hello"


@attrs.frozen
class Settings:
    message: str
    retries: int = 3


@attrs.frozen
class Secrets:
    token: str


def _record(ctx: Context[Any, Any], note: str = "") -> None:
    """Append `op seq detached note` to `<handler_dir>/runs.log` (one write per line)."""
    line = f"{ctx.operation.value} {ctx.sequence_number} {int(ctx.detached)} {note}".rstrip()
    with open(ctx.handler_dir / "runs.log", "a", encoding="utf-8") as file:
        file.write(line + "\n")


class Hello(Handler[Settings, Secrets]):
    """The README's handler with secrets: `transitioning` while working, error 53 without a
    message."""

    name = NAME
    version = "1.0.0"

    async def enable(self, ctx: Context[Settings, Secrets]) -> None:
        _record(ctx, ctx.settings.message)
        await ctx.status.transitioning("working")
        if not ctx.settings.message:
            raise HandlerError(53, "message must not be empty")


@attrs.frozen
class Script:
    """What `Scripted.enable` does: `action` with its parameters."""

    action: str = "succeed"
    code: int = 0
    message: str = "done"
    seconds: float = 0.0


class Scripted(Handler[Script, None]):
    """Does what its settings say; records each run."""

    name = NAME
    version = "1.0.0"
    seen: ClassVar[list[Context[Any, Any]]] = []

    async def install(self, ctx: Context[Script, None]) -> None:
        _record(ctx)
        type(self).seen.append(ctx)

    async def update(self, ctx: Context[Script, None]) -> None:
        _record(ctx)
        type(self).seen.append(ctx)

    async def enable(self, ctx: Context[Script, None]) -> None:
        type(self).seen.append(ctx)
        _record(ctx, ctx.settings.action)
        await _act(ctx, ctx.settings)


async def _act(ctx: Context[Any, Any], script: Script) -> None:
    action = script.action
    if action == "sleep":
        await ctx.status.transitioning("sleeping")
        await anyio.sleep(script.seconds)
        _record(ctx, "woke")
    elif action == "fail":
        raise HandlerError(script.code, script.message)
    elif action == "raise":
        raise RuntimeError(script.message)
    elif action == "raise-empty":
        raise KeyError
    elif action == "warning":
        await ctx.status.warning(script.message, script.code)
    elif action == "error-status":
        await ctx.status.error(script.message, script.code)
    elif action == "substatus":
        ctx.status.substatus("StdOut", StatusLevel.SUCCESS, "out " * 10)
        await ctx.status.transitioning(
            "running", substatus=[Substatus(name="StdErr", status=StatusLevel.ERROR, code=2)]
        )
    elif action == "detach":
        await ctx.status.transitioning("preparing")
        await ctx.detach()
        await anyio.sleep(script.seconds)
        _record(ctx, "worker-done")
        await ctx.status.success("finished in the background")
    elif action == "cancel-self":  # only asyncio lets a task cancel itself by raising
        raise asyncio.CancelledError
    elif action == "swallow":
        try:
            await anyio.sleep(script.seconds)
        except anyio.get_cancelled_exc_class():
            _record(ctx, "swallowed")


class Daemon(Scripted):
    """Enable runs again for the same sequence number (after a reboot)."""

    enable_runs_on_same_sequence: ClassVar[bool] = True


class Plain(Handler[None, None]):
    """Takes no settings at all."""

    name = NAME
    version = "1.0.0"
    seen: ClassVar[list[Context[Any, Any]]] = []

    async def disable(self, ctx: Context[None, None]) -> None:
        type(self).seen.append(ctx)


@attrs.frozen
class AllDefaults:
    level: int = 1
    names: list[str] = attrs.field(factory=list)


class Defaults(Handler[AllDefaults, AllDefaults]):
    """Every settings field has a default."""

    name = NAME
    version = "1.0.0"
    seen: ClassVar[list[Context[Any, Any]]] = []

    async def uninstall(self, ctx: Context[AllDefaults, AllDefaults]) -> None:
        type(self).seen.append(ctx)


class Beats(Handler[None, None]):
    """Reports a heartbeat."""

    name = NAME
    version = "1.0.0"
    report_heartbeat = True

    async def enable(self, ctx: Context[None, None]) -> None:
        await ctx.heartbeat.ready("all good")
        await ctx.heartbeat.not_ready("x" * 5000, 7)


class NoBeats(Handler[None, None]):
    """Reports a heartbeat without declaring it."""

    name = NAME
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        await ctx.heartbeat.ready("all good")


class Talker(Handler[None, None]):
    """Sends telemetry events and logs."""

    name = NAME
    version = "1.2.3"

    async def enable(self, ctx: Context[None, None]) -> None:
        ctx.log.info("héllo from the handler")
        await ctx.events.info("one", task_name="t1", operation_id="op-1")
        await ctx.events.warning("two")
        await ctx.events.error("three")
        await ctx.events.verbose("x" * 10_000)


NOT_A_HANDLER = 42


@attrs.define
class Layout:
    """A lib dir with a handler dir, its HandlerEnvironment.json and a certificate."""

    lib: Path
    name: str = NAME

    @property
    def handler_dir(self) -> Path:
        return self.lib / f"{self.name}-1.0.0"

    @property
    def log_dir(self) -> Path:
        return self.lib / "log" / self.name

    @property
    def events_dir(self) -> Path:
        return self.log_dir / "events"

    def create(self) -> Layout:
        for sub in ("config", "status"):
            (self.handler_dir / sub).mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(parents=True, exist_ok=True)
        environment = [
            {
                "name": self.name,
                "version": 1.0,
                "handlerEnvironment": {
                    "logFolder": str(self.log_dir),
                    "configFolder": str(self.handler_dir / "config"),
                    "statusFolder": str(self.handler_dir / "status"),
                    "heartbeatFile": str(self.handler_dir / "heartbeat.log"),
                    "eventsFolder": str(self.events_dir),
                    "eventsFolder_preview": str(self.events_dir),
                },
            }
        ]
        (self.handler_dir / "HandlerEnvironment.json").write_text(json.dumps(environment))
        return self

    def settings_path(self, seq: int, extension: str | None = None) -> Path:
        name = f"{seq}.settings" if extension is None else f"{extension}.{seq}.settings"
        return self.handler_dir / "config" / name

    def write_settings(
        self,
        seq: int,
        public: Mapping[str, Any] | None = None,
        protected: Mapping[str, Any] | None = None,
        *,
        extension: str | None = None,
        encrypted: str | None = None,
    ) -> None:
        """Write settings; protected ones are encrypted by the runtime's code."""
        handler: dict[str, Any] = {"publicSettings": dict(public) if public is not None else None}
        if protected is not None or encrypted is not None:
            from exthandler._state.crypto import encrypt_protected_settings, ensure_certificate

            certificate = ensure_certificate(self.lib)
            if encrypted is None:
                assert protected is not None
                encrypted = encrypt_protected_settings(protected, certificate)
            handler["protectedSettings"] = encrypted
            handler["protectedSettingsCertThumbprint"] = certificate.thumbprint
        document = {"runtimeSettings": [{"handlerSettings": handler}]}
        self.settings_path(seq, extension).write_text(json.dumps(document))

    def env(self, seq: int, **extra: str) -> dict[str, str]:
        return {
            "ConfigSequenceNumber": str(seq),
            "AZURE_GUEST_AGENT_EXTENSION_PATH": str(self.handler_dir),
            "AZURE_GUEST_AGENT_EXTENSION_VERSION": "1.0.0",
            **extra,
        }

    def process_env(self, seq: int, **extra: str) -> dict[str, str]:
        """The environment of a `python -m exthandler_sdk run` subprocess."""
        environment = dict(os.environ)
        environment.update(self.env(seq, **extra))
        environment["PYTHONPATH"] = str(REPO_ROOT)
        return environment

    def status_path(self, seq: int, extension: str | None = None) -> Path:
        name = f"{seq}.status" if extension is None else f"{extension}.{seq}.status"
        return self.handler_dir / "status" / name

    def status(self, seq: int, extension: str | None = None) -> dict[str, Any]:
        """Element 0 of the status file."""
        document = json.loads(self.status_path(seq, extension).read_bytes())
        assert isinstance(document, list)
        first = document[0]
        assert isinstance(first, dict)
        return first

    def runs(self) -> list[str]:
        path = self.handler_dir / "runs.log"
        return path.read_text().splitlines() if path.exists() else []

    def mrseq(self, extension: str | None = None) -> str | None:
        path = self.handler_dir / ("mrseq" if extension is None else f"{extension}.mrseq")
        return path.read_text().strip() if path.exists() else None


@attrs.define(eq=False)
class Background:
    """What became of a coroutine run as a task of a task group (see `start`)."""

    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: Any = None
    cancelled: bool = False

    async def wait(self) -> Any:
        await self.done.wait()
        return self.result


def start(group: anyio.abc.TaskGroup, call: Callable[[], Awaitable[Any]]) -> Background:
    """Run `call()` in `group`; the Background tells when it ended and what it returned."""
    background = Background()

    async def run() -> None:
        try:
            background.result = await call()
        except anyio.get_cancelled_exc_class():
            background.cancelled = True
            raise
        finally:
            background.done.set()

    group.start_soon(run)
    return background
