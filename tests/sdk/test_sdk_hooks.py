"""`exthandler_sdk.hookimpl` marks functions exactly as pluggy's own marker would, so the
runtime's plugin manager honours every option, while a handler module that uses it does
not import pluggy."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
from exthandler_sdk import hookimpl

OPTIONS: list[dict[str, Any]] = [
    {},
    {"tryfirst": True},
    {"trylast": True, "optionalhook": True},
    {"specname": "exthandler_register_handlers"},
    {"wrapper": True},
    {"hookwrapper": True},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_marks_are_pluggys(options: dict[str, Any]) -> None:
    reference = pluggy.HookimplMarker("exthandler")

    def ours() -> None: ...

    def theirs() -> None: ...

    if options:
        hookimpl(**options)(ours)
        reference(**options)(theirs)
    else:
        hookimpl(ours)
        reference(theirs)
    assert ours.exthandler_impl == theirs.exthandler_impl  # type: ignore[attr-defined]


def test_a_plugin_manager_orders_hooks_by_the_marks() -> None:
    spec = pluggy.HookspecMarker("exthandler")

    class Spec:
        @spec
        def greet(self) -> list[str]:  # type: ignore[empty-body]
            ...

    class First:
        @hookimpl(tryfirst=True)
        def greet(self) -> str:
            return "first"

    class Plain:
        @hookimpl
        def greet(self) -> str:
            return "plain"

    manager = pluggy.PluginManager("exthandler")
    manager.add_hookspecs(Spec)
    manager.register(First())
    manager.register(Plain())
    assert manager.hook.greet() == ["first", "plain"]
