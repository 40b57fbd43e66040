"""The marker plugins use to register with exthandler (project name `exthandler`).

It marks functions exactly as `pluggy.HookimplMarker("exthandler")` does (an
`exthandler_impl` attribute holding the options) without importing pluggy: a packaged
handler module decorated with `@hookimpl` then starts without paying for the plugin
manager it does not use when the agent runs it as a command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["PROJECT", "hookimpl"]

PROJECT = "exthandler"

_F = TypeVar("_F", bound=Callable[..., Any])


class _HookimplMarker:
    """`hookimpl` and `hookimpl(tryfirst=True, ...)`, with pluggy's options."""

    project_name = PROJECT

    @overload
    def __call__(
        self,
        function: _F,
        *,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
    ) -> _F: ...

    @overload
    def __call__(
        self,
        function: None = ...,
        *,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
    ) -> Callable[[_F], _F]: ...

    def __call__(
        self,
        function: _F | None = None,
        *,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> _F | Callable[[_F], _F]:
        options = {
            "wrapper": wrapper,
            "hookwrapper": hookwrapper,
            "optionalhook": optionalhook,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": specname,
        }

        def mark(func: _F) -> _F:
            setattr(func, f"{PROJECT}_impl", dict(options))
            return func

        return mark if function is None else mark(function)

    def __repr__(self) -> str:
        return f"<hookimpl marker of project {PROJECT!r}>"


hookimpl = _HookimplMarker()
