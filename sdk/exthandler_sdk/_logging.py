"""`ctx.log`: a private logger writing UTF-8 to a size-rotated file in the log folder.

Importing this module does not import `logging`: `PendingLog` holds the first records of
an operation until it is known whether the operation runs at all. An enable whose sequence
number was already applied writes them as plain lines in the logger's format and exits
without ever loading the logging machinery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["LOG_BACKUPS", "LOG_MAX_BYTES", "PendingLog", "close_logger", "make_logger"]

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


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
    import logging

    from ._logfile import FORMATTER, Logger, RotatingAppend

    logger = Logger(name, logging.DEBUG)
    logger.propagate = False
    if not log_folder.is_dir():
        try:
            log_folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            # No log folder: the handler still runs, its records go nowhere.
            logger.addHandler(logging.NullHandler())
            return logger
    handler = RotatingAppend(log_folder / file_name, max_bytes=max_bytes, backups=backups)
    handler.setFormatter(FORMATTER)
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Close and detach every handler of `logger`."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class PendingLog:
    """The first INFO records of an operation, kept until it is known whether it runs.

    `open()` makes the real logger (`make_logger`) and hands it the records; `write_plain()`
    appends them to the same file in the same format with one write, for an operation that
    ends before it needs a logger (it falls back to the logger when the file must rotate).
    """

    def __init__(self, log_folder: Path, file_name: str, *, name: str) -> None:
        self.log_folder = log_folder
        self.file_name = file_name
        self.name = name
        self._records: list[tuple[float, str, tuple[Any, ...]]] = []

    def info(self, message: str, *args: Any) -> None:
        self._records.append((time.time(), message, args))

    def open(self) -> logging.Logger:
        logger = make_logger(self.log_folder, self.file_name, name=self.name)
        for _, message, args in self._records:
            logger.info(message, *args)
        self._records.clear()
        return logger

    def write_plain(self) -> None:
        if not self._records:
            return
        pid = os.getpid()
        lines = []
        for created, message, args in self._records:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
            millis = int((created - int(created)) * 1000)
            lines.append(f"{stamp},{millis:03d} {pid} INFO {message % args}\n")
        data = "".join(lines).encode("utf-8", "replace")
        path = self.log_folder / self.file_name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            close_logger(self.open())  # no folder yet, or unusable: the logger's own rules
            return
        try:
            if os.fstat(fd).st_size + len(data) > LOG_MAX_BYTES:
                close_logger(self.open())  # time to rotate: the logger knows how
                return
            os.write(fd, data)
            self._records.clear()
        except OSError:
            pass  # logging must never break the handler's work
        finally:
            os.close(fd)
