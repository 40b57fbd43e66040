"""Run-once bookkeeping for `enable`: the `mrseq` file, a lock and supersession.

Files, all per extension (`<ext>.` prefixed names for a multi-config extension):

- `<handler_dir>/mrseq` (`<ext>.mrseq`): the decimal sequence number last applied
  *successfully*, the reference extensions' format (the agent copies it on upgrade).
- `<config>/.exthandler-sdk.lock` (`.exthandler-sdk.<ext>.lock`): held with `flock` by the
  process applying a sequence number; holds `<seq> <pid>` for whoever waits on it.
  The kernel releases it when that process dies, so a crash leaves nothing stale.
- `<config>/.exthandler-sdk.supersede`: the newest sequence number waiting for the
  lock; the holder polls it and stops its work when it names a newer sequence.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from pathlib import Path

from ._files import write_atomic
from .protocol import mrseq_file_name

__all__ = ["RunOnce"]

POLL_INTERVAL = 0.5
_LOCK_POLL = 0.1


def _read_int(path: str | Path) -> int | None:
    """The integer a small file starts with (None if none). Read with plain os calls: run
    once reads a few of these for every enable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        words = os.read(fd, 256).split()
    except OSError:
        return None
    finally:
        os.close(fd)
    if not words:
        return None
    try:
        return int(words[0])
    except ValueError:
        return None


class RunOnce:
    """The run-once state of one extension (see the module docstring)."""

    def __init__(self, handler_dir: Path, config_dir: Path, extension: str | None) -> None:
        self.handler_dir = handler_dir
        self.config_dir = config_dir
        self.extension = extension
        self._fd: int | None = None
        # What the supersede file asked for when the lock was taken (read once, then).
        self.requested_on_acquire: int | None = None

    def __repr__(self) -> str:
        return f"RunOnce(handler_dir={self.handler_dir!r}, extension={self.extension!r})"

    def _name(self, stem: str) -> str:
        return stem if self.extension is None else f"{stem}.{self.extension}"

    # Strings, built once: every enable opens these, and a pathlib join costs about as
    # much as the open.
    @functools.cached_property
    def mrseq_path(self) -> str:
        """`mrseq`, or `<ext>.mrseq`, in the handler dir."""
        return f"{self.handler_dir}/{mrseq_file_name(self.extension)}"

    @functools.cached_property
    def lock_path(self) -> str:
        return f"{self.config_dir}/{self._name('.exthandler-sdk')}.lock"

    @functools.cached_property
    def supersede_path(self) -> str:
        return f"{self.config_dir}/{self._name('.exthandler-sdk')}.supersede"

    def completed(self) -> int | None:
        """The sequence number last applied successfully, if any."""
        return _read_int(self.mrseq_path)

    def record(self, sequence: int) -> None:
        """Record `sequence` as applied successfully."""
        # Atomic but not flushed, as the reference agent's extensions keep it: a kill never
        # loses it, and after a power loss the sequence merely runs once more.
        write_atomic(self.mrseq_path, f"{sequence}\n".encode("ascii"), durable=False)

    def holder(self) -> int | None:
        """The sequence number the current lock holder applies (None if unknown)."""
        return _read_int(self.lock_path)

    def superseded_by(self) -> int | None:
        """The newest sequence number that asked to take over."""
        return _read_int(self.supersede_path)

    def request_supersede(self, sequence: int) -> None:
        """Ask the holder to stop in favour of `sequence` (never lowers the request)."""
        current = self.superseded_by()
        if current is None or current < sequence:
            write_atomic(
                self.supersede_path, f"{sequence}\n".encode("ascii"), mode=0o600, durable=False
            )

    def try_acquire(self, sequence: int) -> bool:
        """Take the lock without waiting; on success it names `sequence`."""
        assert self._fd is None
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.lock_path, flags, 0o600)
        except FileNotFoundError:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{sequence} {os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        # A request for this or an older sequence is answered by taking the lock.
        requested = self.requested_on_acquire = self.superseded_by()
        if requested is not None and requested <= sequence:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.supersede_path)
        return True

    async def acquire(self, sequence: int) -> None:
        """Wait for the lock, polling (the event loop is never blocked)."""
        import anyio  # not at import: the run-once precheck runs without an event loop

        while True:
            if self.try_acquire(sequence):
                return
            await anyio.sleep(_LOCK_POLL)

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def watch(
        self, sequence: int, first: float = POLL_INTERVAL, interval: float = POLL_INTERVAL
    ) -> int:
        """Return the newer sequence number as soon as one asks to supersede `sequence`.

        The first look comes after `first` seconds (the caller has just looked itself),
        the next ones every `interval`.
        """
        import anyio

        delay = first
        while True:
            await anyio.sleep(delay)
            delay = interval
            newer = self.superseded_by()
            if newer is not None and newer > sequence:
                return newer
