"""The logging classes behind `make_logger` (imported on first use: see `_logging`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO

__all__ = ["FORMATTER", "Logger", "RotatingAppend"]

_FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


class RotatingAppend(logging.Handler):
    """Appends records to `path`, rotating to `path.1` .. `path.<backups>` past `max_bytes`.

    The file is opened on the first record and its size is read then; afterwards the size
    is counted as records are written, so that a record costs one write and no stat (the
    standard library's rotating handler checks the file before every record).
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._stream: IO[bytes] | None = None
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            if self._stream is None:
                try:
                    self._stream = self.path.open("ab")
                except FileNotFoundError:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._stream = self.path.open("ab")
                self._size = self._stream.tell()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._stream is not None
            self._stream.write(data)
            self._stream.flush()
            self._size += len(data)
        except Exception:  # logging must never break the handler's work
            self.handleError(record)

    def _rotate(self) -> None:
        if self._stream is not None:
            self._stream.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._stream = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self.acquire()
        try:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        finally:
            self.release()
        super().close()


class Logger(logging.Logger):
    """A logger that does not look up its caller: the format never shows where a record
    came from, and walking the stack is the dearest part of logging a line."""

    def findCaller(
        self, stack_info: bool = False, stacklevel: int = 1
    ) -> tuple[str, int, str, str | None]:
        if stack_info:
            return super().findCaller(stack_info, stacklevel + 1)
        return "(unknown file)", 0, "(unknown function)", None


FORMATTER = logging.Formatter(_FORMAT)
