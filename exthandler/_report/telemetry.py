"""Collecting the telemetry events extensions drop into their events folder.

An extension writes `<digits>.json` files, each holding one event object or an array of
them (their format and per-event limits are `exthandler_sdk.protocol`'s). The runtime
reads them in order, applies the reference agent's limits (file size, message length,
event size, a rate per extension) and deletes every file it processed,
so that a misbehaving extension can neither fill the disk nor flood the telemetry.
Everything here is synchronous; the engine runs it in a worker thread.
"""

from __future__ import annotations

import collections
import errno
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from exthandler_sdk.protocol import (
    EVENT_FILE,
    EVENT_FILE_MAX_SIZE,
    EVENT_WINDOW_SECONDS,
    EVENTS_PER_WINDOW,
    TelemetryEvent,
    parse_event,
    parse_event_file,
)

from .._fs import UnsafeFileError, open_dir, read_regular
from .._values import Value

__all__ = ["Collected", "EventRateLimiter", "collect_all", "collect_events"]


class EventRateLimiter:
    """At most `limit` events per key (one key per handler) in any `window` seconds.

    A sliding window over what was admitted; `clock` is injectable for tests. One limiter
    lives as long as the runtime, so the limit holds across collection rounds.
    """

    limit: int
    window: float
    clock: Callable[[], float]
    _admitted: dict[str, collections.deque[tuple[float, int]]]

    def __init__(
        self,
        limit: int = EVENTS_PER_WINDOW,
        window: float = EVENT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._admitted = {}

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


def _read(name: str, dir_fd: int) -> bytes | str:
    """The bytes of the event file `name` in the open events dir, or why it is not read
    (it is deleted either way).

    Symbolic links are not followed: an extension must not make the runtime read (and
    report) a file it could not read itself. FIFOs and devices are not opened for reading.
    """
    try:
        return read_regular(name, EVENT_FILE_MAX_SIZE, dir_fd=dir_fd)
    except UnsafeFileError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link, not read"
        if exc.errno == errno.EFBIG:
            return f"larger than the limit of {EVENT_FILE_MAX_SIZE} bytes"
        return "not a regular file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _event_files(dir_fd: int) -> list[str]:
    """`<digits>.json` entries (not directories) of the open events dir, in numeric order,
    then by name."""
    with os.scandir(dir_fd) as entries:
        names = [
            entry.name
            for entry in entries
            if EVENT_FILE.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False)
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
    raw_events = parse_event_file(data)
    if isinstance(raw_events, str):
        problems.append(f"{path}: {raw_events}")
        return []
    accepted: list[TelemetryEvent] = []
    for index, raw in enumerate(raw_events):
        event = parse_event(raw, handler=handler)
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


class Collected(Value, kw_only=False):
    """What one collection round found: each handler's new events, and the problems met."""

    events: tuple[tuple[str, tuple[TelemetryEvent, ...]], ...] = ()
    problems: tuple[str, ...] = ()


def collect_all(folders: Iterable[tuple[str, Path]], *, limiter: EventRateLimiter) -> Collected:
    """Collect the events of every (handler, events folder) pair (file work only: it runs
    in a worker thread and returns data; logging and telling the plugins is the caller's)."""
    events: list[tuple[str, tuple[TelemetryEvent, ...]]] = []
    problems: list[str] = []
    for handler, folder in folders:
        found, trouble = collect_events(folder, handler=handler, limiter=limiter)
        problems.extend(f"{handler}: telemetry: {problem}" for problem in trouble)
        if found:
            events.append((handler, tuple(found)))
    return Collected(events=tuple(events), problems=tuple(problems))
