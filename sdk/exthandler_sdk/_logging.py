"""`ctx.log`: a private logger writing UTF-8 to a size-rotated file in the log folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO

__all__ = ["LOG_BACKUPS", "LOG_MAX_BYTES", "close_logger", "make_logger"]

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
_FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


class _RotatingAppend(logging.Handler):
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


class _Logger(logging.Logger):
    """A logger that does not look up its caller: the format never shows where a record
    came from, and walking the stack is the dearest part of logging a line."""

    def findCaller(
        self, stack_info: bool = False, stacklevel: int = 1
    ) -> tuple[str, int, str, str | None]:
        if stack_info:
            return super().findCaller(stack_info, stacklevel + 1)
        return "(unknown file)", 0, "(unknown function)", None


_FORMATTER = logging.Formatter(_FORMAT)


def make_logger(
    log_folder: Path,
    file_name: str,
    *,
    name: str,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> logging.Logger:
    """A logger of its own (not registered globally) writing `<log_folder>/<file_name>`.

    The file is opened on the first record, rotates at 5 MiB and keeps 3 old files.
    Call `close_logger` when the operation ends.
    """
    logger = _Logger(name, logging.DEBUG)
    logger.propagate = False
    if not log_folder.is_dir():
        try:
            log_folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            # No log folder: the handler still runs, its records go nowhere.
            logger.addHandler(logging.NullHandler())
            return logger
    handler = _RotatingAppend(log_folder / file_name, max_bytes=max_bytes, backups=backups)
    handler.setFormatter(_FORMATTER)
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Close and detach every handler of `logger`."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
