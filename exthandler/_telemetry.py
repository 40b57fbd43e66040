"""Collecting the telemetry events extensions drop into their events folder (PROTOCOL.md 8).

An extension writes `<digits>.json` files, each holding one event object or an array of
them. The runtime reads them in order, applies the reference agent's limits (file size,
message length, event size, a rate per extension) and deletes every file it processed,
so that a misbehaving extension can neither fill the disk nor flood the telemetry.
Everything here is synchronous; the engine runs it in a worker thread.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._fs import UnsafeFileError, open_dir, read_regular

__all__ = [
    "EVENTS_PER_WINDOW",
    "EVENT_MAX_SIZE",
    "EVENT_WINDOW_SECONDS",
    "FILE_MAX_SIZE",
    "MESSAGE_MAX_LENGTH",
    "EventRateLimiter",
    "TelemetryEvent",
    "collect_events",
    "event_size",
]

FILE_MAX_SIZE = 4 * 1024 * 1024
"""Event files larger than this (bytes) are deleted unread."""
MESSAGE_MAX_LENGTH = 3072
"""Characters of `Message` kept."""
EVENT_MAX_SIZE = 6 * 1024
"""Events whose serialised form (see `event_size`) is longer than this are dropped."""
EVENTS_PER_WINDOW = 360
EVENT_WINDOW_SECONDS = 300.0

_EVENT_FILE = re.compile(r"[0-9]+\.json")
# Canonical spelling of each event key; files may use any case.
_KEYS = (
    "Version",
    "Timestamp",
    "TaskName",
    "EventLevel",
    "Message",
    "EventPid",
    "EventTid",
    "OperationId",
)


@attrs.frozen(kw_only=True)
class TelemetryEvent:
    """One event an extension reported, its fields as strings.

    `handler` is the extension handler's name (`Publisher.Type`), set by the runtime;
    every other field comes from the event, under its protocol key.
    """

    handler: str
    version: str
    timestamp: str
    task_name: str
    event_level: str
    message: str
    event_pid: str
    event_tid: str
    operation_id: str

    def to_json(self) -> dict[str, str]:
        """The event under its protocol keys (without `handler`)."""
        return {
            "Version": self.version,
            "Timestamp": self.timestamp,
            "TaskName": self.task_name,
            "EventLevel": self.event_level,
            "Message": self.message,
            "EventPid": self.event_pid,
            "EventTid": self.event_tid,
            "OperationId": self.operation_id,
        }


def event_size(event: TelemetryEvent) -> int:
    """The size the 6 KiB limit applies to: the length of the event's JSON (ASCII-escaped)."""
    return len(json.dumps(event.to_json()))


@attrs.define(eq=False)
class EventRateLimiter:
    """At most `limit` events per key (one key per handler) in any `window` seconds.

    A sliding window over what was admitted; `clock` is injectable for tests. One limiter
    lives as long as the runtime, so the limit holds across collection rounds.
    """

    limit: int = EVENTS_PER_WINDOW
    window: float = EVENT_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _admitted: dict[str, collections.deque[tuple[float, int]]] = attrs.field(
        init=False, factory=dict
    )

    def admit(self, key: str, count: int) -> int:
        """How many of `count` events for `key` may pass now (and count them as passed)."""
        now = self.clock()
        history = self._admitted.setdefault(key, collections.deque())
        while history and history[0][0] <= now - self.window:
            history.popleft()
        used = sum(n for _, n in history)
        allowed = max(0, min(count, self.limit - used))
        if allowed:
            history.append((now, allowed))
        elif not history:
            del self._admitted[key]
        return allowed


def _text(value: object) -> str:
    """A field as a string: strings as they are, null as "", anything else as its JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    if value is None:
        return ""
    return json.dumps(value)


def _event(raw: object, *, handler: str) -> TelemetryEvent | str:
    """One event, or the reason it is dropped."""
    if not isinstance(raw, dict):
        return "not an object"
    fields = {str(key).lower(): value for key, value in raw.items()}
    missing = [key for key in _KEYS if key.lower() not in fields]
    if missing:
        return f"missing {', '.join(missing)}"
    value = {key: _text(fields[key.lower()]) for key in _KEYS}
    event = TelemetryEvent(
        handler=handler,
        version=value["Version"],
        timestamp=value["Timestamp"],
        task_name=value["TaskName"],
        event_level=value["EventLevel"],
        message=value["Message"][:MESSAGE_MAX_LENGTH],
        event_pid=value["EventPid"],
        event_tid=value["EventTid"],
        operation_id=value["OperationId"],
    )
    size = event_size(event)
    if size > EVENT_MAX_SIZE:
        return f"{size} bytes, over the limit of {EVENT_MAX_SIZE}"
    return event


def _read(name: str, dir_fd: int) -> bytes | str:
    """The bytes of the event file `name` in the open events dir, or why it is not read
    (it is deleted either way).

    Symbolic links are not followed: an extension must not make the runtime read (and
    report) a file it could not read itself. FIFOs and devices are not opened for reading.
    """
    try:
        return read_regular(name, FILE_MAX_SIZE, dir_fd=dir_fd)
    except UnsafeFileError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link, not read"
        if exc.errno == errno.EFBIG:
            return f"larger than the limit of {FILE_MAX_SIZE} bytes"
        return "not a regular file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _parse(data: bytes) -> list[Any] | str:
    """The file's events (a single object counts as a list of one), or why it is unusable."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"not valid JSON ({type(exc).__name__})"
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return "neither an event object nor an array of them"


def _event_files(dir_fd: int) -> list[str]:
    """`<digits>.json` entries (not directories) of the open events dir, in numeric order,
    then by name."""
    with os.scandir(dir_fd) as entries:
        names = [
            entry.name
            for entry in entries
            if _EVENT_FILE.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False)
        ]
    names.sort(key=lambda name: (int(name.removesuffix(".json")), name))
    return names


def collect_events(
    events_dir: Path, *, handler: str, limiter: EventRateLimiter
) -> tuple[list[TelemetryEvent], list[str]]:
    """Collect and delete the event files of one handler; return (events, problems).

    Only `<digits>.json` files are touched, in numeric order. Every such file is deleted
    once processed, whether it was usable or not. Dropped events and unusable files are
    reported as `path: reason` problems. A missing folder holds no events; a folder that
    is a link is left alone (its files are not the extension's to hand over).
    """
    try:
        dir_fd = open_dir(events_dir)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except UnsafeFileError as exc:
        return [], [f"{events_dir}: {exc.reason}; no events collected"]
    except OSError as exc:
        return [], [f"{events_dir}: cannot be opened ({exc.strerror or exc})"]
    events: list[TelemetryEvent] = []
    problems: list[str] = []
    try:
        for name in _event_files(dir_fd):
            path = events_dir / name
            data = _read(name, dir_fd)
            if isinstance(data, str):
                problems.append(f"{path}: {data}; deleted")
            else:
                events.extend(_collect_file(path, data, handler, limiter, problems))
            try:
                os.unlink(name, dir_fd=dir_fd)  # removes a link itself, never its target
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"{path}: cannot be deleted ({exc.strerror or exc})")
    finally:
        os.close(dir_fd)
    return events, problems


def _collect_file(
    path: Path, data: bytes, handler: str, limiter: EventRateLimiter, problems: list[str]
) -> list[TelemetryEvent]:
    """The admitted events of one file; problems are appended to `problems`."""
    raw_events = _parse(data)
    if isinstance(raw_events, str):
        problems.append(f"{path}: {raw_events}")
        return []
    accepted: list[TelemetryEvent] = []
    for index, raw in enumerate(raw_events):
        event = _event(raw, handler=handler)
        if isinstance(event, str):
            problems.append(f"{path}: [{index}]: {event}; dropped")
        else:
            accepted.append(event)
    allowed = limiter.admit(handler, len(accepted)) if accepted else 0
    if allowed < len(accepted):
        problems.append(
            f"{path}: {len(accepted) - allowed} events dropped: over the limit of "
            f"{limiter.limit} events per {limiter.window:g} s for {handler}"
        )
    return accepted[:allowed]
