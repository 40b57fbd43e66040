"""Telemetry event files (docs/protocol.md#telemetry-events): render and parse.

An extension writes `<digits>.json` files, each holding one event object or an array of
them; keys are matched case-insensitively. The agent's limits apply on both sides: the
message is cut to 3072 characters, an event whose JSON exceeds 6 KiB is dropped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .._values import Value
from ._names import EVENT_MAX_SIZE, EVENT_MESSAGE_MAX_LENGTH

__all__ = [
    "EVENT_FILE",
    "TelemetryEvent",
    "event_size",
    "parse_event",
    "parse_event_file",
    "render_event",
]

EVENT_FILE = re.compile(r"[0-9]+\.json")
"""The names of event files in the events folder."""
# Canonical spelling of each event key; files may use any case.
_KEYS = (
    "Version",
    "Timestamp",
    "TaskName",
    "EventLevel",
    "Message",
    "EventPid",
    "EventTid",
    "OperationId",
)


class TelemetryEvent(Value):
    """One event an extension reported, its fields as strings.

    `handler` is the extension handler's name (`Publisher.Type`), set by the runtime;
    every other field comes from the event, under its protocol key.
    """

    handler: str
    version: str
    timestamp: str
    task_name: str
    event_level: str
    message: str
    event_pid: str
    event_tid: str
    operation_id: str

    def to_json(self) -> dict[str, str]:
        """The event under its protocol keys (without `handler`)."""
        return {
            "Version": self.version,
            "Timestamp": self.timestamp,
            "TaskName": self.task_name,
            "EventLevel": self.event_level,
            "Message": self.message,
            "EventPid": self.event_pid,
            "EventTid": self.event_tid,
            "OperationId": self.operation_id,
        }


def event_size(event: TelemetryEvent) -> int:
    """The size the 6 KiB limit applies to: the length of the event's JSON (ASCII-escaped)."""
    return len(json.dumps(event.to_json()))


def _text(value: object) -> str:
    """A field as a string: strings as they are, null as "", anything else as its JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    if value is None:
        return ""
    return json.dumps(value)


def parse_event(raw: object, *, handler: str) -> TelemetryEvent | str:
    """One element of an event file as an event from `handler`, or the reason it is
    dropped (the message is cut to 3072 characters; an event over 6 KiB is dropped)."""
    if not isinstance(raw, dict):
        return "not an object"
    fields = {str(key).lower(): value for key, value in raw.items()}
    missing = [key for key in _KEYS if key.lower() not in fields]
    if missing:
        return f"missing {', '.join(missing)}"
    value = {key: _text(fields[key.lower()]) for key in _KEYS}
    event = TelemetryEvent(
        handler=handler,
        version=value["Version"],
        timestamp=value["Timestamp"],
        task_name=value["TaskName"],
        event_level=value["EventLevel"],
        message=value["Message"][:EVENT_MESSAGE_MAX_LENGTH],
        event_pid=value["EventPid"],
        event_tid=value["EventTid"],
        operation_id=value["OperationId"],
    )
    size = event_size(event)
    if size > EVENT_MAX_SIZE:
        return f"{size} bytes, over the limit of {EVENT_MAX_SIZE}"
    return event


def parse_event_file(data: bytes) -> list[Any] | str:
    """The file's events (a single object counts as a list of one), or why it is unusable."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"not valid JSON ({type(exc).__name__})"
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return "neither an event object nor an array of them"


def render_event(
    *,
    version: str,
    timestamp: str,
    task_name: str,
    event_level: str,
    message: str,
    event_pid: str,
    event_tid: str,
    operation_id: str,
) -> str | None:
    """The JSON text (ASCII) of one event file, its message cut to fit the limits; None
    when the event does not fit in 6 KiB even with an empty message."""
    event = {
        "Version": version,
        "Timestamp": timestamp,
        "TaskName": task_name,
        "EventLevel": event_level,
        "Message": message[:EVENT_MESSAGE_MAX_LENGTH],
        "EventPid": event_pid,
        "EventTid": event_tid,
        "OperationId": operation_id,
    }
    data = json.dumps(event)
    while len(data) > EVENT_MAX_SIZE and event["Message"]:
        over = len(data) - EVENT_MAX_SIZE
        # An escaped character takes up to 12 characters of JSON (a surrogate pair).
        event["Message"] = event["Message"][: -max(1, over // 12)]
        data = json.dumps(event)
    return None if len(data) > EVENT_MAX_SIZE else data
