"""The runtime's hook specifications and the plugin-manager factory.

Hooks are synchronous: plugins register things and observe events; the runtime awaits
nothing a plugin returns here. The manager is built by `make_plugin_manager` and handed to
the runtime; nothing is loaded at import time.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy
from exthandler_sdk import Operation, hookimpl

from ._values import Value, field

if TYPE_CHECKING:
    from exthandler_sdk import Handler
    from exthandler_sdk.protocol import TelemetryEvent

    from ._model import HandlerName, Version
    from ._plan.planner import Outcome, Step
    from ._report.view import ExtensionView, InstanceView

__all__ = ["StepResult", "entry_points", "hookspec", "load_object", "make_plugin_manager"]

PROJECT = hookimpl.project_name
"""The pluggy project name plugins register under (the SDK's `hookimpl` names it)."""
hookspec = pluggy.HookspecMarker(PROJECT)

_COMMANDS = frozenset(operation.value for operation in Operation)


class StepResult(Value):
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
    env: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        *,
        kind: str,
        handler: HandlerName,
        version: Version,
        extension: str | None,
        operation: Operation | None,
        ok: bool,
        exit_code: str,
        code: int,
        message: str,
        duration: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.__value_init__(
            kind=kind,
            handler=handler,
            version=version,
            extension=extension,
            operation=operation,
            ok=ok,
            exit_code=exit_code,
            code=code,
            message=message,
            duration=duration,
            env={} if env is None else dict(env),  # its own copy: the caller's may change
        )

    def __hash__(self) -> int:  # the env is compared, but a mapping cannot be hashed
        return hash((self.kind, self.handler, self.version, self.extension, self.exit_code))

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
    def exthandler_handler_paths(self) -> Mapping[str, str | Sequence[str]]:
        """SDK handler classes to run in process, named rather than imported: a handler
        name (`Publisher.Type`) -> the `module:QualifiedName` of its class (or a list of
        them, one per version). A class is imported only when a goal state or the state
        dir names its handler, so that a plugin offering many handlers costs nothing to a
        pass that uses none of them."""
        return {}  # a specification: the plugins' implementations answer

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
        found = entry_points(PROJECT)
        if found is None:  # a path this scan cannot read: ask importlib.metadata
            manager.load_setuptools_entrypoints(PROJECT)
        else:
            for name, value in found:
                if not manager.has_plugin(name) and not manager.is_blocked(name):
                    manager.register(load_object(value), name=name)
    for plugin in plugins:
        manager.register(plugin)
    return manager


def load_object(value: str) -> Any:
    """The object an entry point's value names: `module`, or `module:attr.attr`, with
    optional `[extras]` (ignored) after it; ImportError or AttributeError if it is not there."""
    reference = value.partition("[")[0].strip()
    module_name, _, attribute = reference.partition(":")
    found: Any = importlib.import_module(module_name.strip())
    for part in attribute.strip().split(".") if attribute.strip() else ():
        found = getattr(found, part)
    return found


def entry_points(group: str) -> list[tuple[str, str]] | None:
    """The entry points (name, value) of `group` that the distributions on `sys.path`
    declare, in path order, first come first.

    This reads each distribution's `entry_points.txt` and nothing else, which costs a
    directory listing per path entry and a small read per distribution (the full scan of
    `importlib.metadata` costs tens of milliseconds, at every start of the command line).
    None when a path entry or an import finder holds distributions this scan cannot see
    (a zip archive, a finder of its own): the caller asks `importlib.metadata` then.
    """
    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is not None and not _standard(finder):
            return None
    found: list[tuple[str, str]] = []
    for entry in sys.path:
        directory = entry or "."
        try:
            names = sorted(os.listdir(directory))
        except NotADirectoryError:
            return None  # a zip archive: distributions may be inside
        except OSError:
            continue  # a path entry that is not there: nothing to find
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(f"{directory}/{name}/entry_points.txt", encoding="utf-8") as file:
                    text = file.read(1 << 20)
            except (OSError, UnicodeDecodeError):
                continue  # no entry points, or none readable: as importlib.metadata skips it
            found += _section(text, group)
    return found


def _standard(finder: object) -> bool:
    """Whether `finder` is the standard path finder (the one this scan stands in for)."""
    from importlib.machinery import PathFinder

    return finder is PathFinder


def _section(text: str, group: str) -> Iterator[tuple[str, str]]:
    """The `name = value` lines of section `[group]` of an entry_points.txt."""
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == group and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()
