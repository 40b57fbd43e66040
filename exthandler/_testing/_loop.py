"""Running the testing kit's coroutines from plain (sync) tests, and refusing to nest loops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from exthandler_sdk import ExtHandlerError

__all__ = ["TestingUsageError", "run_blocking"]

T = TypeVar("T")


class TestingUsageError(ExtHandlerError, RuntimeError):
    """A fixture was used in a way that cannot work (e.g. a sync call inside an event loop)."""

    __test__ = False  # not a test class, whatever pytest's name patterns say


def run_blocking(function: Callable[[], Awaitable[T]], *, call: str, instead: str) -> T:
    """Run `function()` in a new asyncio loop; refuse clearly when a loop is already running.

    `call` names the sync method used and `instead` its async variant, for the message.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise TestingUsageError(
            f"{call} cannot run inside a running event loop (an async test): "
            f"use `await {instead}` instead"
        )

    async def main() -> T:
        return await function()

    return anyio.run(main, backend="asyncio")
