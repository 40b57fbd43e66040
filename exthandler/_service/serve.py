"""`exthandler run` as a service: the run loop, reloaded on SIGHUP, told to systemd.

The runtime's own loop (`Runtime.run`) is left as it is: this module starts it, and on
SIGHUP reads the configuration again. An invalid file keeps the configuration in use;
a valid one takes effect between two passes (`Runtime.between_passes`: a pass in flight
finishes first), by restarting the loop, or by reopening the runtime when a runtime
setting changed (the state dir, the repositories, the policy, the log...).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from exthandler_sdk import hookimpl

from .._plan.planner import Step
from .config import ConfigError, SelfUpdateSettings

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .._model import Version
    from .._runtime import Runtime, RuntimeConfig
    from .notify import Notifier
    from .update import SelfUpdate

__all__ = ["Settings", "StepStatus", "serve"]


@attrs.frozen
class Settings:
    """What a configuration resolves to: the runtime's config, the loop's source and
    interval, and every key's value (to say which changed)."""

    runtime: RuntimeConfig
    source: str
    interval: float
    values: Mapping[str, Any]
    self_update: SelfUpdateSettings = attrs.field(factory=SelfUpdateSettings)

    def changes(self, new: Settings) -> list[str]:
        names = sorted({*self.values, *new.values})
        return [name for name in names if self.values.get(name) != new.values.get(name)]


@attrs.define(eq=False)
class StepStatus:
    """A plugin: `STATUS=` lines naming the steps that run."""

    notifier: Notifier
    running: dict[str, Step] = attrs.field(factory=dict)

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        self.running[str(step.handler)] = step
        self._show()

    @hookimpl
    def exthandler_step_finished(self, step: Step, ok: bool, message: str) -> None:
        self.running.pop(str(step.handler), None)
        self._show()

    def _show(self) -> None:
        steps = list(self.running.values())
        if not steps:
            self.notifier.status("applying the goal state")
            return
        more = f" (+{len(steps) - 1} more)" if len(steps) > 1 else ""
        self.notifier.status(f"running {steps[0].describe()}{more}")


async def serve(
    first: Settings,
    reload: Callable[[], Settings],
    *,
    say: Callable[[str], None],
    notifier: Notifier | None,
    pending_reloads: int = 0,
    reload_on_hangup: bool = True,
    updater: SelfUpdate | None = None,
) -> None:
    """Run the loop with `first` until cancelled; on SIGHUP, `reload()` (ConfigError:
    kept as is). `say` gets one line per reload (stderr); the runtime's log gets it too.
    `pending_reloads` are SIGHUPs received before this was called; without
    `reload_on_hangup`, SIGHUP is not listened for (off the main thread). With an
    `updater`, RestartInto is raised once it installed a new agent version (between
    two passes)."""
    from .._runtime import open_runtime
    from .update import RestartInto

    send: MemoryObjectSendStream[int]
    receive: MemoryObjectReceiveStream[int]
    send, receive = anyio.create_memory_object_stream[int](math.inf)
    async with anyio.create_task_group() as group:
        if reload_on_hangup:
            group.start_soon(_forward_hangups, send)
        for _ in range(pending_reloads):
            send.send_nowait(signal.SIGHUP)
        if notifier is not None and notifier.watchdog is not None:
            group.start_soon(_watchdog, notifier, notifier.watchdog)
        restart: list[Version] = []
        failed: list[Exception] = []
        if updater is not None:
            group.start_soon(updater.run, group.cancel_scope, restart)
        settings = first
        try:
            while not restart:
                async with open_runtime(settings.runtime) as runtime:
                    if updater is not None:
                        updater.attach(runtime, settings.self_update)
                    settings = await _serve_runtime(
                        runtime, settings, reload, receive, say, notifier, updater
                    )
        except Exception as exc:  # raised again below, as it came (not in a group)
            failed.append(exc)
            group.cancel_scope.cancel()
    if failed:
        raise failed[0]
    if restart:
        raise RestartInto(restart[0])


async def _forward_hangups(send: MemoryObjectSendStream[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        async for signum in signals:
            send.send_nowait(signum)


async def _watchdog(notifier: Notifier, every: float) -> None:
    while True:
        notifier.send("WATCHDOG=1")
        await anyio.sleep(every)


async def _serve_runtime(
    runtime: Runtime,
    settings: Settings,
    reload: Callable[[], Settings],
    hangups: MemoryObjectReceiveStream[int],
    say: Callable[[str], None],
    notifier: Notifier | None,
    updater: SelfUpdate | None = None,
) -> Settings:
    """Run `runtime`'s loop, restarting it on each reload that changes only the loop's
    settings; the new settings when the runtime must be reopened for them."""

    def tell(line: str) -> None:
        runtime.log(line)
        say(line)

    while True:
        new, changed = await _until_reload(
            runtime, settings, reload, hangups, say, notifier, updater
        )
        if updater is not None:
            updater.configure(new.self_update)
        if new.runtime != settings.runtime:
            tell(f"configuration reloaded: {', '.join(changed)} changed; reopening the runtime")
            return new
        tell(f"configuration reloaded: {', '.join(changed)} changed")
        settings = new


async def _until_reload(
    runtime: Runtime,
    settings: Settings,
    reload: Callable[[], Settings],
    hangups: MemoryObjectReceiveStream[int],
    say: Callable[[str], None],
    notifier: Notifier | None,
    updater: SelfUpdate | None = None,
) -> tuple[Settings, list[str]]:
    """Run the loop with `settings` until a reload changes them; the loop is stopped
    between two passes. The new settings and the keys that changed."""
    looks = 0

    def looked() -> None:
        nonlocal looks
        looks += 1
        if looks == 1 and notifier is not None:
            notifier.send("READY=1", f"STATUS=watching {settings.source}")

    def notify(line: str) -> None:  # the loop's own lines: already in the runtime's log
        say(line)
        if notifier is not None:
            notifier.status(line)

    def tell(line: str) -> None:
        runtime.log(line)
        say(line)

    scope = anyio.CancelScope()
    done = anyio.Event()
    failed: list[Exception] = []

    async def loop(group: anyio.abc.TaskGroup) -> None:
        try:
            with scope:
                await runtime.run(
                    settings.source,
                    interval=settings.interval,
                    notify=notify,
                    looked=looked,
                    applied=updater.goal_applied if updater is not None else None,
                )
        except Exception as exc:  # raised again below, outside the task group
            failed.append(exc)
            group.cancel_scope.cancel()
        finally:
            done.set()

    result: tuple[Settings, list[str]] | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(loop, group)
        result = await _next_reload(settings, reload, hangups, tell, notifier)
        async with runtime.between_passes():  # a pass in flight ends first
            scope.cancel()
            await done.wait()
    if failed:
        raise failed[0]
    assert result is not None
    return result


async def _next_reload(
    settings: Settings,
    reload: Callable[[], Settings],
    hangups: MemoryObjectReceiveStream[int],
    tell: Callable[[str], None],
    notifier: Notifier | None,
) -> tuple[Settings, list[str]]:
    """Wait for a SIGHUP whose configuration is valid and changes something."""
    while True:
        await hangups.receive()
        if notifier is not None:
            notifier.send("RELOADING=1", "STATUS=reloading the configuration")
        try:
            new = reload()
        except ConfigError as exc:
            for problem in exc.problems:
                tell(f"configuration not reloaded: {problem}")
            tell("keeping the configuration in use")
            if notifier is not None:
                notifier.send("READY=1", "STATUS=configuration invalid, keeping the one in use")
            continue
        changed = settings.changes(new)
        if changed:
            return new, changed
        tell("configuration reloaded: nothing changed")
        if notifier is not None:
            notifier.send("READY=1", f"STATUS=watching {settings.source}")
