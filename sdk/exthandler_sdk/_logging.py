"""`ctx.log`: a private logger writing UTF-8 to a size-rotated file in the log folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

__all__ = ["LOG_BACKUPS", "LOG_MAX_BYTES", "close_logger", "make_logger"]

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
_FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


def make_logger(log_folder: Path, file_name: str, *, name: str) -> logging.Logger:
    """A logger of its own (not registered globally) writing `<log_folder>/<file_name>`.

    The file is opened on the first record, rotates at 5 MiB and keeps 3 old files.
    Call `close_logger` when the operation ends.
    """
    logger = logging.Logger(name, logging.DEBUG)
    logger.propagate = False
    try:
        log_folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        # No log folder: the handler still runs, its records go nowhere.
        logger.addHandler(logging.NullHandler())
        return logger
    handler = logging.handlers.RotatingFileHandler(
        log_folder / file_name,
        maxBytes=LOG_MAX_BYTES,
        backupCount=LOG_BACKUPS,
        encoding="utf-8",
        delay=True,
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Close and detach every handler of `logger`."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
