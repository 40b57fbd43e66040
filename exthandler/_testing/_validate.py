"""Checking a status file against the protocol (docs/protocol.md#status-and-heartbeat), with
a reason for every problem.

The protocol's parser (`exthandler_sdk.protocol.parse_status`) is lenient, as the reference
agent is: it coerces what it can. A handler author wants the opposite: to hear about
everything an agent would have to coerce, cut or reject. So this module is strict and says
exactly what is wrong, as `path: reason` lines; it shares only the protocol's limits and
values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from exthandler_sdk.protocol import (
    STATUS_FILE_LIMIT,
    STATUS_MESSAGE_LIMIT,
    SUBSTATUS_FIELD_LIMIT,
    HeartbeatState,
    StatusLevel,
)

__all__ = [
    "FILE_LIMIT",
    "MESSAGE_LIMIT",
    "STATUS_VALUES",
    "SUBSTATUS_FIELD_LIMIT",
    "validate_heartbeat",
    "validate_status",
]

FILE_LIMIT = STATUS_FILE_LIMIT
MESSAGE_LIMIT = STATUS_MESSAGE_LIMIT
STATUS_VALUES = tuple(level.value for level in StatusLevel)
# The parser reads any case of these; the validator wants them spelled as written here.
HEARTBEAT_VALUES = (HeartbeatState.READY.value, HeartbeatState.NOT_READY.value)
# `2026-11-25T12:00:00Z`, optionally with fractions of a second.
_TIMESTAMP = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z\Z")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load(data: bytes, problems: list[str]) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"$: not UTF-8 ({exc.reason} at byte {exc.start})")
        return None
    if text.startswith("\ufeff"):
        problems.append("$: starts with a byte-order mark (agents tolerate it; write none)")
        text = text[1:]
    try:
        return json.loads(text)
    except ValueError as exc:
        problems.append(f"$: not valid JSON ({exc})")
        return None


def _formatted_message(value: object, path: str, limit: int, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: missing or not an object (needs lang and message)")
        return
    lang = value.get("lang")
    if not isinstance(lang, str) or not lang:
        problems.append(f"{path}.lang: missing or not a non-empty string")
    message = value.get("message")
    if not isinstance(message, str):
        problems.append(f"{path}.message: missing or not a string")
    elif len(message) > limit:
        problems.append(f"{path}.message: {len(message)} characters, over the limit of {limit}")


def _status_value(value: object, path: str, problems: list[str]) -> None:
    if value not in STATUS_VALUES:
        problems.append(f"{path}: {value!r} is not one of {', '.join(STATUS_VALUES)}")


def _code(body: dict[str, Any], path: str, problems: list[str]) -> None:
    if "code" in body and not _is_int(body["code"]):
        problems.append(f"{path}.code: {body['code']!r} is not an integer")


def _substatus(entries: object, path: str, problems: list[str]) -> None:
    if entries is None:
        return
    if not isinstance(entries, list):
        problems.append(f"{path}: not an array")
        return
    for index, entry in enumerate(entries):
        here = f"{path}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{here}: not an object")
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            problems.append(f"{here}.name: missing or not a string")
        elif len(name) > SUBSTATUS_FIELD_LIMIT:
            problems.append(
                f"{here}.name: {len(name)} characters, over the limit of {SUBSTATUS_FIELD_LIMIT}"
            )
        _status_value(entry.get("status"), f"{here}.status", problems)
        _code(entry, here, problems)
        _formatted_message(
            entry.get("formattedMessage"),
            f"{here}.formattedMessage",
            SUBSTATUS_FIELD_LIMIT,
            problems,
        )


def validate_status(data: bytes) -> list[str]:
    """Every way the bytes of a status file break the protocol's format (empty: valid).

    Checked: UTF-8 JSON array of at least one object; `timestampUTC` as
    `YYYY-MM-DDTHH:MM:SSZ`; a `status` object whose `status` is one of the four values,
    whose `code` (when given) is an integer and whose `formattedMessage` has `lang` and
    `message`; substatus entries likewise; the size limits (file 128 KiB, message 1 KiB,
    substatus name and message 10 KiB).
    """
    problems: list[str] = []
    if len(data) > FILE_LIMIT:
        problems.append(f"$: {len(data)} bytes, over the limit of {FILE_LIMIT} (agents cut it)")
    document = _load(data, problems)
    if problems and document is None:
        return problems
    if not isinstance(document, list):
        problems.append(f"$: a JSON {type(document).__name__}, not an array")
        return problems
    if not document:
        problems.append("$: an empty array (element 0 is the status)")
        return problems
    first = document[0]
    if not isinstance(first, dict):
        problems.append("$[0]: not an object")
        return problems
    stamp = first.get("timestampUTC")
    if not isinstance(stamp, str) or not _TIMESTAMP.fullmatch(stamp):
        problems.append(f"$[0].timestampUTC: {stamp!r} is not like 2026-11-25T12:00:00Z")
    body = first.get("status")
    if not isinstance(body, dict):
        problems.append("$[0].status: missing or not an object")
        return problems
    _status_value(body.get("status"), "$[0].status.status", problems)
    _code(body, "$[0].status", problems)
    _formatted_message(
        body.get("formattedMessage"), "$[0].status.formattedMessage", MESSAGE_LIMIT, problems
    )
    _substatus(body.get("substatus"), "$[0].status.substatus", problems)
    return problems


def validate_heartbeat(data: bytes) -> list[str]:
    """Every way the bytes of `heartbeat.log` break the protocol's format (empty: valid)."""
    problems: list[str] = []
    document = _load(data, problems)
    if problems and document is None:
        return problems
    if not isinstance(document, list) or not document or not isinstance(document[0], dict):
        return [*problems, "$: not a JSON array whose element 0 is an object"]
    body = document[0].get("heartbeat")
    if not isinstance(body, dict):
        return [*problems, "$[0].heartbeat: missing or not an object"]
    if body.get("status") not in HEARTBEAT_VALUES:
        problems.append(
            f"$[0].heartbeat.status: {body.get('status')!r} is not one of"
            f" {', '.join(HEARTBEAT_VALUES)}"
        )
    _code(body, "$[0].heartbeat", problems)
    _formatted_message(
        body.get("formattedMessage"), "$[0].heartbeat.formattedMessage", MESSAGE_LIMIT, problems
    )
    return problems
