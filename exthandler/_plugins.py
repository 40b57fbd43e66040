"""The runtime's hook specifications and the plugin-manager factory.

Hooks are synchronous: plugins register things and observe events; the runtime awaits
nothing a plugin returns here. The manager is built by `make_plugin_manager` and handed to
the runtime; nothing is loaded at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy
from exthandler_sdk import hookimpl

if TYPE_CHECKING:
    from exthandler_sdk import Handler
    from exthandler_sdk.protocol import TelemetryEvent

    from ._plan import Step
    from ._view import ExtensionView, InstanceView

__all__ = ["hookspec", "make_plugin_manager"]

PROJECT = hookimpl.project_name
"""The pluggy project name plugins register under (the SDK's `hookimpl` names it)."""
hookspec = pluggy.HookspecMarker(PROJECT)


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
    def exthandler_step_finished(self, step: Step, ok: bool, message: str) -> None:
        """A step ended; `message` says how (empty when there is nothing to say)."""

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
