"""Running the testing kit's coroutines from plain (sync) tests, and refusing to nest loops."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from exthandler_sdk import ExtHandlerError

__all__ = ["BACKENDS", "TestingUsageError", "run_blocking"]

T = TypeVar("T")

BACKENDS = ("asyncio", "trio")
"""The anyio backends the kit's sync methods can start (trio when it is installed)."""


class TestingUsageError(ExtHandlerError, RuntimeError):
    """A fixture was used in a way that cannot work (e.g. a sync call inside an event loop)."""

    __test__ = False  # not a test class, whatever pytest's name patterns say


def check_backend(backend: str) -> str:
    """`backend` if the kit can run on it; TestingUsageError naming the choices if not."""
    if backend not in BACKENDS:
        choices = ", ".join(repr(name) for name in BACKENDS)
        raise TestingUsageError(f"backend must be one of {choices}, got {backend!r}")
    return backend


def _loop_running() -> bool:
    """Whether this thread runs an event loop: asyncio's, or trio's (when trio is loaded)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def run_blocking(
    function: Callable[[], Awaitable[T]], *, call: str, instead: str, backend: str = "asyncio"
) -> T:
    """Run `function()` in a new event loop of `backend` (an anyio backend name); refuse
    clearly when a loop is already running in this thread.

    `call` names the sync method used and `instead` its async variant, for the message.
    """
    if _loop_running():
        raise TestingUsageError(
            f"{call} cannot run inside a running event loop (an async test): "
            f"use `await {instead}` instead"
        )

    async def main() -> T:
        return await function()

    return anyio.run(main, backend=check_backend(backend))
