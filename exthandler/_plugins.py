"""The runtime's hook specifications and the plugin-manager factory.

Hooks are synchronous: plugins register things and observe events; the runtime awaits
nothing a plugin returns here. The manager is built by `make_plugin_manager` and handed to
the runtime; nothing is loaded at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy
from exthandler_sdk import Operation, hookimpl

if TYPE_CHECKING:
    from exthandler_sdk import Handler
    from exthandler_sdk.protocol import TelemetryEvent

    from ._model import HandlerName, Version
    from ._plan.planner import Outcome, Step
    from ._report.view import ExtensionView, InstanceView

__all__ = ["StepResult", "hookspec", "make_plugin_manager"]

PROJECT = hookimpl.project_name
"""The pluggy project name plugins register under (the SDK's `hookimpl` names it)."""
hookspec = pluggy.HookspecMarker(PROJECT)

_COMMANDS = frozenset(operation.value for operation in Operation)


def _copy(env: Mapping[str, str]) -> Mapping[str, str]:
    return dict(env)


@attrs.frozen(kw_only=True)
class StepResult:
    """How one step ended, as `exthandler_step_finished` reports it: enough for an observer
    (a test kit, a progress display, an audit log) to know what ran and how, without
    reading the runtime's logs.

    `kind` is the step's kind (`fetch`, `install`, ..., `converge`); `operation` is the
    operation of the command it ran, None for a step that runs no command. `exit_code` is
    the command's, as the protocol's exit-code variables carry it (`NOT_RUN` when nothing
    ran); `code` the protocol error code of a failure (0 on success). `env` holds the
    protocol variables (docs/protocol.md#command-environment) the command was given, empty
    when no command ran. `duration` is the step's, in seconds.
    """

    kind: str
    handler: HandlerName
    version: Version
    extension: str | None
    operation: Operation | None
    ok: bool
    exit_code: str
    code: int
    message: str
    duration: float
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_copy, hash=False)

    @classmethod
    def of(
        cls,
        step: Step,
        outcome: Outcome,
        message: str,
        *,
        env: Mapping[str, str],
        duration: float,
    ) -> StepResult:
        """The result of `step`, which ended with `outcome`."""
        kind = str(step.kind.value)
        return cls(
            kind=kind,
            handler=step.handler,
            version=step.version,
            extension=step.extension,
            operation=Operation(kind) if kind in _COMMANDS else None,
            ok=outcome.ok,
            exit_code=outcome.exit_code,
            code=outcome.code,
            message=message,
            duration=duration,
            env=env,
        )


class RuntimeSpec:
    """Hooks the runtime calls. Implement any of them with `exthandler_sdk.hookimpl`."""

    @hookspec
    def exthandler_register_handlers(self) -> Sequence[type[Handler[Any, Any]]]:
        """SDK handler classes to run in process; each version registered counts as an
        available version of its handler."""
        return ()  # a specification: the plugins' implementations answer

    @hookspec
    def exthandler_step_started(self, step: Step) -> None:
        """A step of a handler is about to run."""

    @hookspec
    def exthandler_step_finished(
        self, step: Step, ok: bool, message: str, result: StepResult
    ) -> None:
        """A step ended; `message` says how (empty when there is nothing to say), `result`
        what ran: the operation, the protocol variables, the exit code, the duration.

        An implementation may take any subset of these arguments, by name.
        """

    @hookspec
    def exthandler_extension_changed(self, view: ExtensionView) -> None:
        """An extension's part of the instance view changed."""

    @hookspec
    def exthandler_instance_view_changed(self, view: InstanceView) -> None:
        """The instance view changed (called at most a few times a second, and at the end)."""

    @hookspec
    def exthandler_telemetry_events(self, handler: str, events: Sequence[TelemetryEvent]) -> None:
        """Telemetry events an extension dropped in its events folder were collected."""


def make_plugin_manager(
    *, load_entry_points: bool = True, plugins: Sequence[Any] = ()
) -> pluggy.PluginManager:
    """A plugin manager with the runtime's hooks, entry-point plugins and `plugins` registered."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(RuntimeSpec)
    if load_entry_points:
        manager.load_setuptools_entrypoints(PROJECT)
    for plugin in plugins:
        manager.register(plugin)
    return manager
