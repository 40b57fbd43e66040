"""Reading what an extension reports about itself: its status file and its heartbeat.

Parsing is pure (bytes in, value out) and never raises: an unusable status file becomes
an `error` report with code 1012 and a `path: reason` explanation, an unusable heartbeat
becomes `Unknown`. The coercions are the reference Linux agent's (PROTOCOL.md section 7),
so a status file means the same thing here as under that agent.
"""

from __future__ import annotations

import enum
import errno
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import attrs
from exthandler_sdk import ErrorCode, StatusLevel

from ._fs import open_regular, read_regular

__all__ = [
    "HEARTBEAT_MAX_AGE",
    "Heartbeat",
    "HeartbeatState",
    "StatusReport",
    "SubStatus",
    "parse_heartbeat",
    "parse_status",
    "read_heartbeat",
    "read_status_file",
]

STATUS_FILE_LIMIT = 128 * 1024
"""Raw size above which a status file's texts are cut (the reference agent's limit)."""
MESSAGE_LIMIT = 1024
"""The longest top-level message kept from an oversized status file, suffix included."""
SUBSTATUS_FIELD_LIMIT = 10 * 1024
"""The longest substatus name or message kept from an oversized status file."""
TRUNCATED_SUFFIX = " ... [TRUNCATED]"
HEARTBEAT_MAX_AGE = 600.0
"""Seconds after which a heartbeat file no longer counts: the handler is Unresponsive."""

_STATUS_WHERE = "status file"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEARTBEAT_WHERE = "heartbeat file"


@attrs.frozen(kw_only=True)
class SubStatus:
    """One entry of `status.substatus` (e.g. CustomScript's StdOut and StdErr)."""

    name: str
    status: StatusLevel
    code: int
    message: str


@attrs.frozen(kw_only=True)
class StatusReport:
    """What an extension wrote in `status/<seq>.status`, after the reference coercions.

    `invalid` is set when the file was unusable (not JSON, not an array, no `status`
    object, ...); the report is then `error` with code 1012 and `message` equal to
    `invalid`, so that it can be shown like any other terminal status.
    """

    name: str | None
    operation: str | None
    status: StatusLevel
    code: int
    message: str
    substatus: tuple[SubStatus, ...]
    timestamp: str | None
    configuration_applied_time: str | None
    invalid: str | None = None


class HeartbeatState(enum.StrEnum):
    """A handler's heartbeat, as the reference agent reports it."""

    READY = "Ready"
    NOT_READY = "NotReady"
    UNRESPONSIVE = "Unresponsive"
    UNKNOWN = "Unknown"


@attrs.frozen(kw_only=True)
class Heartbeat:
    """The state an extension declared in `heartbeat.log`, or why none could be read."""

    state: HeartbeatState
    code: int
    message: str


class _Invalid(Exception):
    """Internal: a document is unusable; the argument is the `path: reason` text."""


def _clean(text: str) -> str:
    """Replace lone surrogates (valid in JSON escapes, not in UTF-8) so text can be printed."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _load(data: bytes, where: str) -> Any:
    """Decode JSON (a UTF-8 BOM is tolerated); any problem raises `_Invalid`."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise _Invalid(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:  # JSONDecodeError, and ints too long to convert
        raise _Invalid(f"{where}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise _Invalid(f"{where}: not valid JSON (nested too deeply)") from exc


def _first_element(document: Any, where: str) -> dict[str, Any]:
    if not isinstance(document, list):
        raise _Invalid(f"{where}: not a JSON array")
    if not document:
        raise _Invalid(f"{where}: empty array")
    first = document[0]
    if not isinstance(first, dict):
        raise _Invalid(f"{where}: [0]: not an object")
    return first


def _code(value: object) -> int:
    """A status code: an integer, or a string or float holding one; anything else is 0.

    The reference agent passes `code` through untouched; a value that is not an integer
    would only break the report later, so it is read as 0 (the documented default).
    """
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else 0
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        try:
            return int(value)
        except ValueError:  # more digits than Python converts
            return 0
    return 0


def _optional_text(value: object) -> str | None:
    return _clean(value) if isinstance(value, str) else None


def _formatted_message(value: object) -> str:
    """`formattedMessage.message`, when the object also names its `lang`; else ""."""
    if not isinstance(value, dict) or "lang" not in value:
        return ""
    message = value.get("message")
    return _clean(message) if isinstance(message, str) else ""


def _level(value: object) -> StatusLevel | None:
    if not isinstance(value, str):
        return None
    try:
        return StatusLevel(value.strip().lower())
    except ValueError:
        return None


def _truncate(text: str, limit: int) -> str:
    """Cut `text` so that it plus the truncation suffix fits in `limit` characters."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED_SUFFIX)] + TRUNCATED_SUFFIX


def _substatus(entry: object, *, cut: bool) -> SubStatus | None:
    """One substatus entry, or None when it is unusable (not an object, no known status)."""
    if not isinstance(entry, dict):
        return None
    level = _level(entry.get("status"))
    if level is None:
        return None
    name = _optional_text(entry.get("name")) or ""
    message = _formatted_message(entry.get("formattedMessage"))
    if cut:
        name = _truncate(name, SUBSTATUS_FIELD_LIMIT)
        message = _truncate(message, SUBSTATUS_FIELD_LIMIT)
    return SubStatus(name=name, status=level, code=_code(entry.get("code")), message=message)


def invalid_report(reason: str) -> StatusReport:
    """The report standing for an unusable status file: error 1012 explaining `reason`."""
    return StatusReport(
        name=None,
        operation=None,
        status=StatusLevel.ERROR,
        code=int(ErrorCode.STATUS_INVALID),
        message=reason,
        substatus=(),
        timestamp=None,
        configuration_applied_time=None,
        invalid=reason,
    )


def parse_status(data: bytes) -> StatusReport:
    """Parse the bytes of a status file; never raises.

    Only element 0 of the array counts. An unknown top-level status becomes `error`;
    substatus entries that are not objects or have no known status are skipped. When the
    raw file exceeds 128 KiB its texts are cut (message to 1 KiB, substatus name and
    message to 10 KiB each, suffix included), as the reference agent does.
    """
    where = _STATUS_WHERE
    try:
        first = _first_element(_load(data, where), where)
        body = first.get("status")
        if body is None:
            raise _Invalid(f"{where}: [0].status: missing")
        if not isinstance(body, dict):
            raise _Invalid(f"{where}: [0].status: not an object")
        if "status" not in body:
            raise _Invalid(f"{where}: [0].status.status: missing")
    except _Invalid as exc:
        return invalid_report(str(exc))
    cut = len(data) > STATUS_FILE_LIMIT
    message = _formatted_message(body.get("formattedMessage"))
    if cut:
        message = _truncate(message, MESSAGE_LIMIT)
    entries = body.get("substatus")
    substatus = tuple(
        parsed
        for parsed in (_substatus(entry, cut=cut) for entry in _as_list(entries))
        if parsed is not None
    )
    return StatusReport(
        name=_optional_text(body.get("name")),
        operation=_optional_text(body.get("operation")),
        status=_level(body.get("status")) or StatusLevel.ERROR,
        code=_code(body.get("code")),
        message=message,
        substatus=substatus,
        timestamp=_optional_text(first.get("timestampUTC")),
        configuration_applied_time=_optional_text(body.get("configurationAppliedTime")),
    )


def _as_list(value: object) -> list[Any]:
    """`substatus` may be absent or null (some extensions write null); both mean none."""
    return value if isinstance(value, list) else []


def read_status_file(path: Path) -> StatusReport | None:
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


_HEARTBEAT_STATES = {
    "ready": HeartbeatState.READY,
    "notready": HeartbeatState.NOT_READY,
}


def _unknown(reason: str) -> Heartbeat:
    return Heartbeat(state=HeartbeatState.UNKNOWN, code=int(ErrorCode.UNKNOWN), message=reason)


def parse_heartbeat(data: bytes, *, age_seconds: float) -> Heartbeat:
    """Parse `heartbeat.log`, last modified `age_seconds` ago; never raises.

    A file older than 10 minutes makes the handler Unresponsive whatever it says (checked
    first, as the reference agent does); an unusable file gives Unknown with the reason.
    """
    if age_seconds > HEARTBEAT_MAX_AGE:
        return Heartbeat(
            state=HeartbeatState.UNRESPONSIVE,
            code=int(ErrorCode.UNKNOWN),
            message="Extension heartbeat is not responsive",
        )
    where = _HEARTBEAT_WHERE
    try:
        first = _first_element(_load(data, where), where)
    except _Invalid as exc:
        return _unknown(str(exc))
    body = first.get("heartbeat")
    if not isinstance(body, dict):
        return _unknown(f"{where}: [0].heartbeat: missing or not an object")
    raw = body.get("status")
    state = _HEARTBEAT_STATES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if state is None:
        if raw is None:
            return _unknown(f"{where}: [0].heartbeat.status: missing")
        shown = repr(_clean(raw)[:64]) if isinstance(raw, str) else "not a string"
        return _unknown(f"{where}: [0].heartbeat.status: not Ready or NotReady ({shown})")
    return Heartbeat(
        state=state,
        code=_code(body.get("code")),
        message=_formatted_message(body.get("formattedMessage")),
    )


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
            return _unknown(f"{_HEARTBEAT_WHERE}: {exc.strerror}")
        return _unknown(f"{_HEARTBEAT_WHERE}: cannot be read ({exc.strerror or exc})")
    current = time.time() if now is None else now
    return parse_heartbeat(data, age_seconds=current - mtime)
