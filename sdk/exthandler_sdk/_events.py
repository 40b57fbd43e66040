"""`ctx.events`: telemetry events dropped into the events folder (docs/protocol.md).

Each event is one `<digits>.json` file, written as `<digits>.json.tmp` and then linked to
its final name (never overwriting another event), with names increasing within a process.
The agent's limits are applied here so that nothing is silently lost on its side:
`Message` is cut to 3072 characters, then further until the event's JSON is at most
6 KiB, and at most 360 events are written in any 5 minutes by one `Events` object
(the rest are dropped and logged).
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .protocol import (
    EVENT_MAX_SIZE,
    EVENT_WINDOW_SECONDS,
    EVENTS_PER_WINDOW,
    render_event,
)

__all__ = ["Events"]


@attrs.define(eq=False)
class Events:
    """Writes telemetry events for the agent to collect.

    When the agent gave no events folder (older agents), events are only logged.
    """

    folder: Path | None
    version: str
    operation_id: str
    log: logging.Logger
    task_name: str = "exthandler"
    limit: int = EVENTS_PER_WINDOW
    window: float = EVENT_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _sent: collections.deque[float] = attrs.field(init=False, factory=collections.deque)
    _last_name: int = attrs.field(init=False, default=0)
    dropped: int = attrs.field(init=False, default=0)

    async def info(
        self, message: str, *, task_name: str | None = None, operation_id: str | None = None
    ) -> bool:
        """Send an `Informational` event; False when it was dropped."""
        return self.send("Informational", message, task_name, operation_id)

    async def warning(
        self, message: str, *, task_name: str | None = None, operation_id: str | None = None
    ) -> bool:
        """Send a `Warning` event; False when it was dropped."""
        return self.send("Warning", message, task_name, operation_id)

    async def error(
        self, message: str, *, task_name: str | None = None, operation_id: str | None = None
    ) -> bool:
        """Send an `Error` event; False when it was dropped."""
        return self.send("Error", message, task_name, operation_id)

    async def verbose(
        self, message: str, *, task_name: str | None = None, operation_id: str | None = None
    ) -> bool:
        """Send a `Verbose` event; False when it was dropped."""
        return self.send("Verbose", message, task_name, operation_id)

    def send(
        self, level: str, message: str, task_name: str | None, operation_id: str | None
    ) -> bool:
        """Write one event now (synchronously); False when dropped by a limit."""
        if self.folder is None:
            self.log.info("event (no events folder) %s: %s", level, message)
            return False
        now = self.clock()
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) >= self.limit:
            self.dropped += 1
            self.log.warning(
                "event dropped: more than %d events in %g s: %s", self.limit, self.window, message
            )
            return False
        data = render_event(
            version=self.version,
            timestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            task_name=task_name or self.task_name,
            event_level=level,
            message=message,
            event_pid=str(os.getpid()),
            event_tid=str(threading.get_native_id()),
            operation_id=operation_id or self.operation_id,
        )
        if data is None:
            self.dropped += 1
            self.log.warning("event dropped: larger than %d bytes", EVENT_MAX_SIZE)
            return False
        self._write(data.encode("ascii"))
        self._sent.append(now)
        return True

    def _write(self, data: bytes) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        number = max(time.time_ns(), self._last_name + 1)
        temp = self.folder / f"{number}.json.tmp"
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            while True:
                try:
                    os.link(temp, self.folder / f"{number}.json")
                    break
                except FileExistsError:
                    number += 1
        finally:
            temp.unlink(missing_ok=True)
        self._last_name = number
