"""`ctx.status`: the extension's status file (docs/protocol.md), written atomically.

What goes in the file, and how its texts are cut to the agent's limits, is
`protocol.render_status`'s business.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from pathlib import Path

from ._errors import ExtHandlerError
from ._files import write_atomic
from .protocol import (
    Operation,
    StatusLevel,
    Substatus,
    render_status,
    utc_timestamp,
)

__all__ = ["StatusWriteError", "StatusWriter"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class StatusWriter:
    """`ctx.status`: report progress and outcome of the current operation.

    Substatus entries added with `substatus()` (or passed to a report) accumulate for the
    whole operation and go out with every later report; a later entry with the same name
    replaces the earlier one.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        operation: Operation,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self.path = path
        self.name = name
        self.operation = operation
        self.clock = clock
        self._substatus: dict[str, Substatus] = {}
        self._last: tuple[StatusLevel, int, str] | None = None
        self._frozen = False

    def __repr__(self) -> str:
        return f"StatusWriter(path={self.path!r}, name={self.name!r}, operation={self.operation!r})"

    @property
    def written_terminal(self) -> bool:
        """Whether a success, warning or error status was written in this operation."""
        return self._last is not None and self._last[0].terminal

    @property
    def last_level(self) -> StatusLevel | None:
        """The level of the last status written in this operation, if any."""
        return None if self._last is None else self._last[0]

    @property
    def last_code(self) -> int:
        """The code of the last status written (0 when none was)."""
        return 0 if self._last is None else self._last[1]

    @property
    def frozen(self) -> bool:
        """Whether writes are ignored (another process owns the status file)."""
        return self._frozen

    def substatus(
        self, name: str, status: StatusLevel | str, message: str = "", code: int = 0
    ) -> Substatus:
        """Add (or replace, by name) a substatus entry for the next reports; returns it."""
        entry = Substatus(name=name, status=StatusLevel(status), message=message, code=code)
        self._add([entry])
        return entry

    def _add(self, entries: Iterable[Substatus]) -> None:
        for entry in entries:
            self._substatus.pop(entry.name, None)
            self._substatus[entry.name] = entry

    async def transitioning(self, message: str, *, substatus: Iterable[Substatus] = ()) -> None:
        """Report work in progress (refreshed periodically while the operation runs)."""
        self.write(StatusLevel.TRANSITIONING, 0, message, substatus)

    async def success(
        self, message: str, code: int = 0, *, substatus: Iterable[Substatus] = ()
    ) -> None:
        """Report that the operation succeeded."""
        self.write(StatusLevel.SUCCESS, code, message, substatus)

    async def warning(
        self, message: str, code: int = 0, *, substatus: Iterable[Substatus] = ()
    ) -> None:
        """Report that the operation finished with a warning."""
        self.write(StatusLevel.WARNING, code, message, substatus)

    async def error(self, message: str, code: int, *, substatus: Iterable[Substatus] = ()) -> None:
        """Report that the operation failed with `code`."""
        self.write(StatusLevel.ERROR, code, message, substatus)

    def write(
        self, level: StatusLevel, code: int, message: str, substatus: Iterable[Substatus] = ()
    ) -> None:
        """Write a status now (synchronously); dropped once the writer is frozen."""
        if self._frozen:
            return
        self._add(substatus)
        self._last = (level, int(code), message)
        self._flush()

    def stage(self, level: StatusLevel, code: int, message: str) -> None:
        """Make a status the current one without writing it: the next `refresh` (or a later
        write) puts it on disk. For the `transitioning` an operation starts with: a
        missing status file already reads as transitioning, so an operation that ends
        within the first refresh never needs it on disk."""
        if not self._frozen:
            self._last = (level, int(code), message)

    def refresh(self) -> bool:
        """Rewrite the last status with a new timestamp if it is `transitioning`."""
        if self._frozen or self._last is None or self._last[0].terminal:
            return False
        self._flush()
        return True

    def freeze(self) -> None:
        """Ignore every later write (another process now owns the status file)."""
        self._frozen = True

    def _flush(self) -> None:
        assert self._last is not None
        level, code, message = self._last
        now = utc_timestamp(self.clock())
        data = render_status(
            name=self.name,
            operation=self.operation,
            status=level,
            code=code,
            message=message,
            substatus=self._substatus.values(),
            timestamp=now,
            applied_time=now if level.terminal else None,
        )
        try:
            write_atomic(self.path, data, durable=False)
        except OSError as exc:
            raise StatusWriteError(f"cannot write status file {self.path}: {exc}") from exc


class StatusWriteError(ExtHandlerError, OSError):
    """The status file could not be written."""
