"""`Runtime.events()`: what the runtime does, as typed events an embedding application
consumes from its own task.

Events are published on the event loop and never wait for a consumer: each stream keeps
at most `limit` events, and when a slow consumer lets it fill, the oldest are dropped and
counted; the consumer then gets one `EventsDropped(count)` before the next event. The
engine is never stalled by a stream, however slow.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from types import TracebackType

import anyio
from exthandler_sdk import Operation, hookimpl

from .._model import HandlerName, Version
from .._plan.planner import Step
from .._plugins import StepResult
from .._values import Value
from .view import ExtensionView, InstanceView

__all__ = [
    "Event",
    "EventHub",
    "EventStream",
    "EventsDropped",
    "ExtensionChanged",
    "PassFinished",
    "PassStarted",
    "Relay",
    "StepCounter",
    "StepFinished",
    "StepStarted",
]


class PassStarted(Value):
    """`apply` began converging the goal state `goal_state_id` (`extensions` entries)."""

    goal_state_id: str | None
    extensions: int


class PassFinished(Value):
    """`apply` ended: its final `view`, how long it took, how many steps ran a command,
    the extensions that failed, and whether it was cancelled (the view then shows the
    interrupted steps transitioning)."""

    goal_state_id: str | None
    view: InstanceView | None
    duration: float
    commands: int
    failed: tuple[str, ...]
    cancelled: bool = False


class StepStarted(Value):
    """A step is about to run (`operation` is None for a step that runs no command)."""

    kind: str
    operation: Operation | None
    handler: HandlerName
    version: Version
    extension: str | None


class StepFinished(Value):
    """A step's outcome was recorded; `result` says everything (see `StepResult`)."""

    result: StepResult

    @property
    def handler(self) -> HandlerName:
        return self.result.handler

    @property
    def version(self) -> Version:
        return self.result.version

    @property
    def extension(self) -> str | None:
        return self.result.extension

    @property
    def operation(self) -> Operation | None:
        return self.result.operation

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def duration(self) -> float:
        return self.result.duration


class ExtensionChanged(Value):
    """An extension's part of the instance view changed."""

    view: ExtensionView


class EventsDropped(Value):
    """The consumer fell behind: `count` older events were dropped from its stream."""

    count: int


Event = PassStarted | PassFinished | StepStarted | StepFinished | ExtensionChanged | EventsDropped


class EventStream:
    """One consumer's events, from its creation until `close()` (or the end of an
    `async with` block). Iterate it with `async for`; iteration ends once it is closed."""

    def __init__(self, limit: int, on_close: Callable[[EventStream], None]) -> None:
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        self._buffer: collections.deque[Event] = collections.deque()
        self._limit = limit
        self._dropped = 0
        self._closed = False
        self._wakeup = anyio.Event()
        self._on_close = on_close

    @property
    def dropped(self) -> int:
        """Events dropped since the consumer last received an `EventsDropped`."""
        return self._dropped

    def push(self, event: Event) -> None:
        """Add `event` (never blocks: the oldest event goes when the stream is full)."""
        if self._closed:
            return
        if len(self._buffer) >= self._limit:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving; an iteration in progress ends after the events already kept."""
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._wakeup.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer and not self._dropped:
            if self._closed:
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return EventsDropped(count=count)
        return self._buffer.popleft()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """The open streams of a runtime; `publish` hands an event to each (on the loop)."""

    streams: list[EventStream]
    # Told when the first stream opens and the last closes (to listen only when needed).
    on_change: Callable[[bool], None] | None

    def __init__(self) -> None:
        self.streams = []
        self.on_change = None

    def open(self, limit: int) -> EventStream:
        stream = EventStream(limit, self._closed)
        self.streams.append(stream)
        if len(self.streams) == 1 and self.on_change is not None:
            self.on_change(True)
        return stream

    def _closed(self, stream: EventStream) -> None:
        self.streams.remove(stream)
        if not self.streams and self.on_change is not None:
            self.on_change(False)

    @property
    def listening(self) -> bool:
        return bool(self.streams)

    def publish(self, event: Event) -> None:
        for stream in self.streams:
            stream.push(event)


_COMMAND_KINDS = frozenset(operation.value for operation in Operation)


class Relay:
    """Hands the runtime's hook calls to the open event streams of `hub`."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        kind = str(step.kind.value)
        self.hub.publish(
            StepStarted(
                kind=kind,
                operation=Operation(kind) if kind in _COMMAND_KINDS else None,
                handler=step.handler,
                version=step.version,
                extension=step.extension,
            )
        )

    @hookimpl
    def exthandler_step_finished(self, result: StepResult) -> None:
        self.hub.publish(StepFinished(result=result))

    @hookimpl
    def exthandler_extension_changed(self, view: ExtensionView) -> None:
        self.hub.publish(ExtensionChanged(view=view))


class StepCounter:
    """Counts the steps of a pass that ran a command, by operation."""

    def __init__(self) -> None:
        self.ran: dict[str, int] = {}

    @property
    def commands(self) -> int:
        return sum(self.ran.values())

    @hookimpl
    def exthandler_step_finished(self, result: StepResult) -> None:
        if result.operation is not None:
            name = result.operation.value
            self.ran[name] = self.ran.get(name, 0) + 1

    def summary(self, view: InstanceView) -> str:
        """`3 steps ran: 1 install, 2 enable; 1 extension failed`, or `nothing to do`."""
        failed = len(view.failed())
        total = self.commands
        parts = []
        if total:
            counts = ", ".join(f"{n} {op}" for op, n in self.ran.items())
            parts.append(f"{total} step{'s' if total != 1 else ''} ran: {counts}")
        if failed:
            parts.append(f"{failed} extension{'s' if failed != 1 else ''} failed")
        return "; ".join(parts) or "nothing to do"
