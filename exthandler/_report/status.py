"""Reading what an extension reports about itself: its status file and its heartbeat.

The files are read here, without following links or blocking, with a size cap; what they
mean is `exthandler_sdk.protocol`'s business (`parse_status`, `parse_heartbeat`). Neither
reader raises: an unreadable file is reported like an unusable one.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

from exthandler_sdk.protocol import (
    Heartbeat,
    StatusReport,
    invalid_report,
    parse_heartbeat,
    parse_status,
    unknown_heartbeat,
)

from .._fs import open_regular, read_regular

__all__ = ["read_heartbeat", "read_status_file"]

_STATUS_WHERE = "status file"
_HEARTBEAT_WHERE = "heartbeat file"


def read_status_file(path: Path | str) -> StatusReport | None:
    """Read and parse a status file; None when it does not exist.

    A missing file means `transitioning`, but whether that applies is the caller's call
    (it knows whether a command ran). A file that exists but cannot be read is reported
    as invalid (1012) rather than raised, like a file that cannot be parsed: so is a
    link, a FIFO or anything else that is not a regular file, and a file of more than
    `READ_LIMIT` bytes (left unread). Opening never blocks (see `_fs.open_regular`).
    """
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EFBIG:  # left unread
            return invalid_report(f"{_STATUS_WHERE}: {exc.strerror}")
        return invalid_report(f"{_STATUS_WHERE}: cannot be read ({exc.strerror or exc})")
    return parse_status(data)


def read_heartbeat(path: Path, *, now: float | None = None) -> Heartbeat | None:
    """Read `heartbeat.log`; None when it does not exist.

    `now` (seconds since the epoch, default the current time) is compared with the file's
    modification time to decide whether the heartbeat is stale. A link, a FIFO or a file
    over `READ_LIMIT` bytes gives Unknown, unread (see `read_status_file`).
    """
    try:
        with open_regular(path) as file:
            mtime = file.info.st_mtime
            data = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EFBIG:  # left unread
            return unknown_heartbeat(f"{_HEARTBEAT_WHERE}: {exc.strerror}")
        return unknown_heartbeat(f"{_HEARTBEAT_WHERE}: cannot be read ({exc.strerror or exc})")
    current = time.time() if now is None else now
    return parse_heartbeat(data, age_seconds=current - mtime)
