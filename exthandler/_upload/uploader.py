"""The status uploader: a task of its own beside the engine, uploading the aggregate
status document when it changes.

The engine never waits for it. Whatever changes (the instance view, through the
`exthandler_instance_view_changed` hook; a goal state given, finished or refused) only
marks the document stale and wakes the task; the document is built when an upload is due,
so an upload always carries the latest status and the statuses between two uploads are
never sent ("latest document wins"). Pacing:

- at most one upload per `interval` (10 s by default), and only when the document's
  content changed (`content_digest`) or its destination did;
- an unchanged document again every `heartbeat` seconds, so its reader can tell a
  machine that is quiet from one that is gone;
- after a failure, again after `interval * 2**(n-1)` (capped at `max_backoff`, drawn in
  [0.5, 1] of that), with the latest document; the first failure, a new reason and the
  recovery are logged, not every retry.

The clock (`Clock`) is injectable, so that tests drive hours of retries without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from random import random as _random
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from exthandler_sdk import hookimpl

from .._model import ExtensionGoal, GoalState, StatusBlobType
from .._report.view import ExtensionView, InstanceView
from .document import (
    GoalOutcome,
    OsInfo,
    agent_status,
    build_document,
    content_digest,
    encode,
    os_info,
)

# The destinations (URL parsing, the blob client and its HTTP stack) are imported at the
# first upload: a runtime with nowhere to upload never needs them.
if TYPE_CHECKING:
    from .targets import Destination

__all__ = ["Clock", "StatusUploader", "SystemClock", "UploadStats"]


class Clock(Protocol):
    """Time as the uploader sees it."""

    def monotonic(self) -> float:
        """Seconds, for intervals."""
        ...

    def utc_now(self) -> datetime:
        """The time of day, for the document's times."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `monotonic()` has reached `deadline` (at once if it has)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def utc_now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.monotonic()))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UploadStats:
    """Counts since the uploader started: `attempts` (uploads tried), `uploads` (that
    worked), `failures` (that did not)."""

    attempts: int
    uploads: int
    failures: int

    def __init__(self, attempts: int = 0, uploads: int = 0, failures: int = 0) -> None:
        self.attempts = attempts
        self.uploads = uploads
        self.failures = failures


def _default_log(message: str, level: int) -> None:
    logging.getLogger("exthandler.status").log(level, "%s", message)


def _runtime_version() -> str:
    from .. import __version__

    return __version__


class StatusUploader:
    """Uploads the status document built from `view()` to the goal state's status blob,
    else to `default_url`; run `run()` in a task, call `flush()` before leaving.

    `is_multi` says whether an extension's handler is multi-config. `log` gets one line
    per event worth a line (never a credential). `interval`, `heartbeat`, `max_backoff`
    and `timeout` are seconds (see the module's docstring); `clock` and `random` are the
    time and the jitter, which tests replace; `stats` counts what happened.
    """

    view: Callable[[], InstanceView]
    default_url: str | None
    interval: float
    heartbeat: float
    max_backoff: float
    timeout: float
    clock: Clock
    random: Callable[[], float]
    log: Callable[[str, int], None]
    is_multi: Callable[[ExtensionView, ExtensionGoal | None], bool] | None
    agent_version: str
    os: OsInfo
    stats: UploadStats

    _goal: GoalState | None
    _outcome: GoalOutcome | None
    _armed: bool
    _stale: bool
    _wake: anyio.Event
    _write_lock: anyio.Lock
    _parsed: tuple[str, Destination | None] | None
    _uploaded: tuple[str, Destination] | None
    _last_attempt: float | None
    _last_success: float | None
    _failures: int
    _backoff: float
    _error: str | None
    _progress: anyio.Event

    def __init__(
        self,
        view: Callable[[], InstanceView],
        default_url: str | None = None,
        interval: float = 10.0,
        heartbeat: float = 60.0,
        max_backoff: float = 300.0,
        timeout: float = 30.0,
        clock: Clock | None = None,
        random: Callable[[], float] = _random,
        log: Callable[[str, int], None] = _default_log,
        is_multi: Callable[[ExtensionView, ExtensionGoal | None], bool] | None = None,
        agent_version: str | None = None,
        os: OsInfo | None = None,
        stats: UploadStats | None = None,
    ) -> None:
        self.view = view
        self.default_url = default_url
        self.interval = interval
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.clock = SystemClock() if clock is None else clock
        self.random = random
        self.log = log
        self.is_multi = is_multi
        self.agent_version = _runtime_version() if agent_version is None else agent_version
        self.os = os_info() if os is None else os
        self.stats = UploadStats() if stats is None else stats
        self._goal = None
        self._outcome = None
        self._armed = False
        self._stale = False
        self._wake = anyio.Event()
        self._write_lock = anyio.Lock()
        self._parsed = None
        self._uploaded = None
        self._last_attempt = None
        self._last_success = None
        self._failures = 0
        self._backoff = 0.0
        self._error = None
        self._progress = anyio.Event()

    # -- what the runtime tells it -------------------------------------------------------------

    def changed(self) -> None:
        """The status may have changed: wake the task (it decides whether to upload)."""
        self._armed = True
        self._stale = True
        self._wake.set()

    @hookimpl
    def exthandler_instance_view_changed(self, view: InstanceView) -> None:
        self.changed()

    def goal_started(self, goal: GoalState) -> None:
        """A pass over `goal` begins: its extensions and status blob count from now."""
        self._goal = goal
        self.changed()

    def goal_finished(self, goal: GoalState) -> None:
        """The pass over `goal` ran to its end."""
        self._outcome = GoalOutcome.of(goal, ok=True, time=_stamp(self.clock.utc_now()))
        self.changed()

    def goal_refused(self, goal: GoalState, message: str) -> None:
        """`goal` cannot be carried out; nothing was changed."""
        self._goal = goal
        self._outcome = GoalOutcome.of(
            goal, ok=False, time=_stamp(self.clock.utc_now()), message=message
        )
        self.changed()

    # -- the document and where it goes ------------------------------------------------------

    def destination(self) -> Destination | None:
        """The goal state's status blob, else `default_url` (None: nowhere to upload).
        A destination that cannot be used is logged once and counts as none."""
        blob = self._goal.status_upload_blob if self._goal is not None else None
        parse: tuple[str, StatusBlobType | None]
        if blob is not None:
            key, parse = f"blob:{blob.blob_type}:{blob.url}", (blob.url, blob.blob_type)
        elif self.default_url is not None:
            key, parse = f"url:{self.default_url}", (self.default_url, None)
        else:
            return None
        if self._parsed is None or self._parsed[0] != key:
            from .targets import destination

            try:
                found: Destination | None = destination(*parse)
            except ValueError as exc:
                self.log(f"cannot upload the status: {exc}", logging.ERROR)
                found = None
            self._parsed = (key, found)
        return self._parsed[1]

    def document(self) -> dict[str, Any]:
        """The status document as it stands."""
        view = self.view()
        return build_document(
            view,
            goal=self._goal,
            outcome=self._outcome,
            agent=agent_status(view, self._outcome),
            agent_version=self.agent_version,
            os=self.os,
            now=_stamp(self.clock.utc_now()),
            is_multi=self.is_multi,
        )

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Upload when due, until cancelled. Never raises: a failure is retried."""
        while True:
            self._wake = anyio.Event()
            due = self._due()
            if due is None:
                await self._wake.wait()
            elif due > self.clock.monotonic():
                await self._sleep_or_wake(due)
            else:
                await self._attempt(final=False)

    def _due(self) -> float | None:
        """When the next upload is due (on the clock's `monotonic` scale), None while
        nothing is to be uploaded until something changes."""
        if not self._armed or self.destination() is None:
            return None
        if self._failures:
            assert self._last_attempt is not None
            return self._last_attempt + self._backoff
        if self._stale or self._uploaded is None:
            if self._last_attempt is None:
                return float("-inf")
            return self._last_attempt + self.interval
        assert self._last_success is not None
        return self._last_success + self.heartbeat

    async def _sleep_or_wake(self, deadline: float) -> None:
        wake = self._wake
        async with anyio.create_task_group() as group:

            async def sleeper() -> None:
                await self.clock.sleep_until(deadline)
                group.cancel_scope.cancel()

            async def waker() -> None:
                await wake.wait()
                group.cancel_scope.cancel()

            group.start_soon(sleeper)
            group.start_soon(waker)

    async def _attempt(self, *, final: bool) -> bool:
        """Upload the current document if it is due: changed, heartbeat, retry or `final`.
        True when the destination holds the current document afterwards."""
        async with self._write_lock:
            self._stale = False
            where = self.destination()
            if where is None:
                return False
            document = self.document()
            digest = content_digest(document)
            now = self.clock.monotonic()
            same = self._uploaded == (digest, where)
            beat_due = self._last_success is None or now >= self._last_success + self.heartbeat
            if same and (final or (not self._failures and not beat_due)):
                return True
            self._last_attempt = now
            self.stats.attempts += 1
            from .targets import UploadError, write

            try:
                await write(where, encode(document), request_timeout=self.timeout)
            except UploadError as exc:
                self._failed(exc.message)
                return False
            finally:
                self._progress.set()
                self._progress = anyio.Event()
            if self._failures:
                self.log(f"uploading to {where.shown} works again", logging.INFO)
            self._failures, self._error = 0, None
            self._uploaded = (digest, where)
            self._last_success = self.clock.monotonic()
            self.stats.uploads += 1
            return True

    def _failed(self, message: str) -> None:
        self.stats.failures += 1
        self._failures += 1
        cap = max(self.max_backoff, self.interval)
        base = min(self.interval * 2.0 ** min(self._failures - 1, 32), cap)
        self._backoff = base * (0.5 + 0.5 * self.random())
        if message != self._error:
            self.log(f"upload failed (retried with backoff): {message}", logging.WARNING)
            self._error = message

    async def flush(self) -> bool:
        """Upload the current document now unless the destination already holds it: one
        try, whatever the pacing, after the upload in flight if any, all within `timeout`
        seconds. True when the destination holds it afterwards."""
        if not self._armed:
            return True
        with anyio.move_on_after(self.timeout):
            return await self._attempt(final=True)
        self.log(f"the last status was not uploaded within {self.timeout:g} s", logging.WARNING)
        return False

    async def progressed(self) -> None:
        """Return after the next upload attempt (for tests and benchmarks)."""
        await self._progress.wait()
