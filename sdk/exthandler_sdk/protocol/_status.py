"""Status and heartbeat files: render and parse, bytes in and out.

docs/protocol.md#status-and-heartbeat says what the files hold.

Parsing never raises: an unusable status file becomes an `error` report with code 1012
and a `path: reason` explanation, an unusable heartbeat becomes `Unknown`. The coercions
are the reference Linux agent's, so a file means the same thing here as under that agent.

Rendering cuts texts before they reach the agent, keeping their *tail* (the end of a log
is where the reason for a failure is): the top message to 1 KiB, substatus names and
messages to 10 KiB, and then, if the file would still exceed 128 KiB, substatus texts are
cut further and, as a last resort, the oldest substatus entries are dropped.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
from collections.abc import Iterable
from typing import Any

from .._values import Value
from ._codes import ErrorCode, Operation, StatusLevel
from ._names import (
    HEARTBEAT_MAX_AGE,
    INTEGER,
    STATUS_FILE_LIMIT,
    STATUS_MESSAGE_LIMIT,
    SUBSTATUS_FIELD_LIMIT,
)

__all__ = [
    "Heartbeat",
    "HeartbeatState",
    "StatusReport",
    "Substatus",
    "TRUNCATED_PREFIX",
    "TRUNCATED_SUFFIX",
    "invalid_report",
    "parse_heartbeat",
    "parse_status",
    "render_heartbeat",
    "render_status",
    "truncate_tail",
    "unknown_heartbeat",
    "utc_timestamp",
]

TRUNCATED_PREFIX = "[TRUNCATED] ... "
"""What replaces the head of a text cut when rendering (the tail is kept)."""
TRUNCATED_SUFFIX = " ... [TRUNCATED]"
"""What replaces the tail of a text cut when parsing (as the reference agent cuts)."""
_MIN_FIELD = 64
_STATUS_WHERE = "status file"
_HEARTBEAT_WHERE = "heartbeat file"


class Substatus(Value):
    """One entry of `status.substatus` (e.g. the StdOut and StdErr of a script)."""

    name: str
    status: StatusLevel = StatusLevel.SUCCESS
    message: str = ""
    code: int = 0


class StatusReport(Value):
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
    substatus: tuple[Substatus, ...]
    timestamp: str | None
    configuration_applied_time: str | None
    invalid: str | None = None


class HeartbeatState(enum.StrEnum):
    """A handler's heartbeat, as the reference agent reports it."""

    READY = "Ready"
    NOT_READY = "NotReady"
    UNRESPONSIVE = "Unresponsive"
    UNKNOWN = "Unknown"


class Heartbeat(Value):
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
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
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


def _substatus(entry: object, *, cut: bool) -> Substatus | None:
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
    return Substatus(name=name, status=level, code=_code(entry.get("code")), message=message)


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
        message = _truncate(message, STATUS_MESSAGE_LIMIT)
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


_HEARTBEAT_STATES = {
    "ready": HeartbeatState.READY,
    "notready": HeartbeatState.NOT_READY,
}


def unknown_heartbeat(reason: str) -> Heartbeat:
    """The heartbeat standing for a file that cannot be used: Unknown, explaining `reason`."""
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
        return unknown_heartbeat(str(exc))
    body = first.get("heartbeat")
    if not isinstance(body, dict):
        return unknown_heartbeat(f"{where}: [0].heartbeat: missing or not an object")
    raw = body.get("status")
    state = _HEARTBEAT_STATES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if state is None:
        if raw is None:
            return unknown_heartbeat(f"{where}: [0].heartbeat.status: missing")
        shown = repr(_clean(raw)[:64]) if isinstance(raw, str) else "not a string"
        return unknown_heartbeat(f"{where}: [0].heartbeat.status: not Ready or NotReady ({shown})")
    return Heartbeat(
        state=state,
        code=_code(body.get("code")),
        message=_formatted_message(body.get("formattedMessage")),
    )


def utc_timestamp(now: datetime.datetime | None = None) -> str:
    """`2026-11-25T12:00:00Z`, the timestamp format of status files."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncate_tail(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its tail behind `[TRUNCATED] ... `."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(TRUNCATED_PREFIX))
    return TRUNCATED_PREFIX + (text[len(text) - keep :] if keep else "")


def _substatus_json(entry: Substatus, limit: int) -> dict[str, Any]:
    return {
        "name": truncate_tail(entry.name, limit),
        "status": str(StatusLevel(entry.status)),
        "code": int(entry.code),
        "formattedMessage": {"lang": "en-US", "message": truncate_tail(entry.message, limit)},
    }


def render_status(
    *,
    name: str,
    operation: Operation,
    status: StatusLevel,
    code: int,
    message: str,
    substatus: Iterable[Substatus] = (),
    timestamp: str,
    applied_time: str | None = None,
) -> bytes:
    """The bytes of a status file, always at most 128 KiB (see the module docstring)."""
    entries = list(substatus)
    body: dict[str, Any] = {"name": name, "operation": operation.display_name}
    if applied_time is not None:
        body["configurationAppliedTime"] = applied_time
    body.update(
        {
            "status": str(StatusLevel(status)),
            "code": int(code),
            "formattedMessage": {
                "lang": "en-US",
                "message": truncate_tail(message, STATUS_MESSAGE_LIMIT),
            },
        }
    )
    document = [{"version": 1.0, "timestampUTC": timestamp, "status": body}]
    limit = SUBSTATUS_FIELD_LIMIT
    while True:
        if entries:
            body["substatus"] = [_substatus_json(entry, limit) for entry in entries]
        else:
            body.pop("substatus", None)
        data = json.dumps(document, ensure_ascii=False).encode("utf-8")
        if len(data) <= STATUS_FILE_LIMIT:
            return data
        if limit > _MIN_FIELD:
            limit = max(_MIN_FIELD, limit // 2)
        else:
            entries = entries[len(entries) // 2 + 1 :]  # keep the newest half


def render_heartbeat(state: HeartbeatState | str, code: int, message: str) -> bytes:
    """The bytes of `heartbeat.log` declaring `state` (Ready or NotReady); the message is
    cut to its last 1 KiB."""
    document = [
        {
            "version": "1.0",
            "heartbeat": {
                "status": str(state),
                "code": int(code),
                "formattedMessage": {
                    "lang": "en-US",
                    "message": truncate_tail(message, STATUS_MESSAGE_LIMIT),
                },
            },
        }
    ]
    return json.dumps(document, ensure_ascii=False).encode("utf-8")
