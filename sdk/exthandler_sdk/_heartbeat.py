"""`ctx.heartbeat`: the `heartbeat.log` of handlers that declare `report_heartbeat`."""

from __future__ import annotations

from pathlib import Path

import attrs

from ._errors import ExtHandlerError
from ._files import write_atomic
from .protocol import render_heartbeat

__all__ = ["Heartbeat", "HeartbeatDisabledError"]


class HeartbeatDisabledError(ExtHandlerError, RuntimeError):
    """The handler reported a heartbeat without declaring `report_heartbeat = True`."""


@attrs.define(eq=False)
class Heartbeat:
    """Writes `heartbeat.log`; the agent calls a handler Unresponsive when it is 10 min old.

    A long-running handler should report at least every few minutes.
    """

    path: Path
    enabled: bool

    async def ready(self, message: str = "") -> None:
        """Report the handler healthy."""
        self._write("Ready", 0, message)

    async def not_ready(self, message: str, code: int = 1) -> None:
        """Report the handler unhealthy with `code`."""
        self._write("NotReady", code, message)

    def _write(self, state: str, code: int, message: str) -> None:
        if not self.enabled:
            raise HeartbeatDisabledError(
                "ctx.heartbeat needs `report_heartbeat = True` on the Handler class "
                "(the agent ignores heartbeat.log otherwise)"
            )
        write_atomic(self.path, render_heartbeat(state, code, message), durable=False)
