"""Where `run` finds its goal states, and how often it looks.

- `SourceWatcher`: a local file, or a directory of them, watched by content.
- `RemoteSource`: a URL (`http(s)://`, `s3://`, `gs://`, `az://`, an Azure Blob URL with a
  SAS), read with conditional requests: an unchanged goal state costs one small request.
- `SourcePoller`: either of them, and the pacing of the looks: the interval with jitter
  (machines started together do not stay in step), exponential backoff while the source
  fails, and the source's health (`SourceView`) for the runtime's own status. Its clock,
  sleep and randomness are injectable (`Pacing`), so that backoff is tested without
  waiting.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from exthandler._remote import Location
    from exthandler._report.view import SourceView

__all__ = [
    "SOURCE_LIMIT",
    "Pacing",
    "RemoteSource",
    "SourceError",
    "SourcePoller",
    "SourceWatcher",
]

SOURCE_LIMIT = 64 * 1024 * 1024
"""The largest goal-state file `run` reads."""


class SourceWatcher:
    """Which goal state `run` should apply: SOURCE itself, or in a directory, the file
    whose content changed last.

    Changes are told by content (a digest of each file), never by modification times
    alone: a file copied with its old time (`cp -p`, `rsync -t`) or written while the
    clock stepped back is still new. At the first look, the newest file by time is the
    goal; afterwards, a file that appears or whose content changes becomes the goal (by
    time, then name, when several change at once).
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        self._digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._current: tuple[Path, bytes] | None = None

    def poll(self) -> tuple[Path, bytes] | None:
        """The goal state file to apply now and its bytes (None if there is none)."""
        if not self.source.is_dir():
            data = _read_source(self.source)
            self._current = None if data is None else (self.source, data)
            return self._current
        changed: list[tuple[int, str, Path, bytes]] = []
        seen: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        with os.scandir(self.source) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                info = entry.stat()
                key = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
                known = self._digests.get(entry.name)
                if known is not None and known[0] == key:
                    seen[entry.name] = known  # unchanged: no need to read it again
                    continue
                data = _read_source(Path(entry.path))
                if data is None:
                    continue
                digest = hashlib.sha256(data).hexdigest()
                seen[entry.name] = (key, digest)
                if known is None or known[1] != digest:
                    changed.append((info.st_mtime_ns, entry.name, Path(entry.path), data))
        self._digests = seen
        if changed:
            _, _, path, data = max(changed, key=lambda item: (item[0], item[1]))
            self._current = (path, data)
        elif self._current is not None and self._current[0].name not in seen:
            self._current = None  # the goal's file is gone: keep the last applied
        return self._current


def _read_source(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read(SOURCE_LIMIT)
    except OSError:
        return None


class SourceError(Exception):
    """The goal-state source could not be read; `message` is `location: reason`, without
    credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.define
class RemoteSource:
    """A goal state at a URL, read conditionally: `poll` returns the bytes when they
    changed since the last poll that returned some, else None."""

    location: Location
    _tag: str | None = None

    @property
    def name(self) -> str:
        return self.location.redacted

    async def poll(self) -> bytes | None:
        from exthandler._remote import NOT_MODIFIED, Fetched, RemoteError, read

        try:
            fetched = await read(self.location, etag=self._tag, limit=SOURCE_LIMIT)
        except RemoteError as exc:
            raise SourceError(exc.message) from None
        if fetched is NOT_MODIFIED:
            return None
        assert isinstance(fetched, Fetched)
        self._tag = fetched.tag
        return fetched.data


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _anyio_sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class Pacing:
    """How `run` waits between looks at its source.

    Healthy: `interval` times a factor drawn in [1 - jitter, 1 + jitter]. After `n` failed
    looks in a row: `interval * 2**n`, capped at `max_backoff` (at least the interval),
    times a factor drawn in [0.5, 1] ("equal jitter"). `sleep`, `now` and `random` are the
    clock; tests pass their own.
    """

    interval: float = 5.0
    jitter: float = 0.1
    max_backoff: float = 300.0
    sleep: Callable[[float], Awaitable[None]] = _anyio_sleep
    now: Callable[[], datetime] = _utc_now
    random: Callable[[], float] = random.random

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next look, after `failures` failed looks in a row."""
        if failures <= 0:
            return self.interval * (1 + self.jitter * (2 * self.random() - 1))
        cap = max(self.max_backoff, self.interval)
        base = min(self.interval * 2.0 ** min(failures, 32), cap)
        return base * (0.5 + 0.5 * self.random())


@attrs.define
class SourcePoller:
    """`run`'s goal-state source (a path or a URL) and its health.

    `poll` returns `(name, bytes)` when there is a goal state not returned before (a
    changed file, an object whose ETag changed), else None; a source that cannot be read
    raises SourceError. `failed`, `invalid` and `answered` keep `health`, the `source` key
    of the instance view.
    """

    source: str | os.PathLike[str]
    pacing: Pacing = attrs.field(factory=Pacing)
    failures: int = 0
    health: SourceView = attrs.field(init=False)
    _local: SourceWatcher | None = attrs.field(init=False, default=None)
    _remote: RemoteSource | None = attrs.field(init=False, default=None)
    _seen: bytes | None = attrs.field(init=False, default=None)
    _invalid: str | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        from exthandler._remote._url import is_url, parse_location, redact
        from exthandler._report.view import SourceView

        if isinstance(self.source, str) and is_url(self.source):
            location = parse_location(self.source)
            if location.kind == "file":
                assert location.path is not None
                self._local = SourceWatcher(location.path)
            else:
                self._remote = RemoteSource(location)
            name = redact(self.source)
        else:
            self._local = SourceWatcher(Path(self.source))
            name = os.fspath(self.source)
        self.health = SourceView(location=name)

    async def poll(self) -> tuple[str, bytes] | None:
        if self._remote is not None:
            data = await self._remote.poll()
            return None if data is None else (self._remote.name, data)
        import anyio.to_thread

        assert self._local is not None
        watcher = self._local
        found = await anyio.to_thread.run_sync(watcher.poll)
        if found is None:
            if not watcher.source.exists():
                raise SourceError(f"{watcher.source}: not found")
            return None
        path, data = found
        if data == self._seen:
            return None
        self._seen = data
        return os.fspath(path), data

    def forget(self) -> None:
        """Return the current goal state again at the next poll (after an invalid one is
        replaced by the same bytes as the last good one, the local watcher would not)."""
        self._seen = None

    def answered(self) -> None:
        """The source was read (whatever it held): Ready again, unless what it holds is
        still the goal state found invalid."""
        now = _stamp(self.pacing.now())
        self.failures = 0
        self.health = self.health.replace(last_success=now, failures=0)
        if self._invalid is not None:
            self.invalid(self._invalid)
        else:
            self.health = self.health.replace(status="Ready", message="", since=None)

    def applied(self) -> None:
        """The goal state the source holds was valid (and applied)."""
        self._invalid = None
        self.health = self.health.replace(status="Ready", message="", since=None)

    def failed(self, message: str) -> bool:
        """The source could not be read; True when this is news (a new reason)."""
        self.failures += 1
        news = self.health.status != "Unreachable" or self.health.message != message
        since = self.health.since if self.health.status == "Unreachable" else None
        self.health = self.health.replace(
            status="Unreachable",
            message=message,
            since=since or _stamp(self.pacing.now()),
            failures=self.failures,
        )
        return news

    def invalid(self, message: str) -> None:
        """The source holds a goal state that cannot be used."""
        self._invalid = message
        self.health = self.health.replace(
            status="Invalid",
            message=message,
            since=(
                self.health.since if self.health.status == "Invalid" else _stamp(self.pacing.now())
            ),
        )

    def delay(self) -> float:
        return self.pacing.delay(self.failures)
