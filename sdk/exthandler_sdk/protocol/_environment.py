"""HandlerEnvironment.json and the variables of every command: render and parse.

docs/protocol.md says what they hold ("On disk", "Command environment")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import ExtHandlerError
from .._values import Value
from ._names import HEARTBEAT_NAME, INTEGER, NOT_RUN, Variable

__all__ = [
    "HandlerEnvironment",
    "HandlerEnvironmentError",
    "ProtocolVariables",
    "parse_handler_environment",
    "read_protocol_variables",
    "render_handler_environment",
]


class HandlerEnvironmentError(ExtHandlerError, ValueError):
    """HandlerEnvironment.json or a protocol variable is missing or unusable."""


class HandlerEnvironment(Value):
    """The folders the agent gave the handler in `HandlerEnvironment.json`."""

    name: str | None
    log_folder: Path
    config_folder: Path
    status_folder: Path
    heartbeat_file: Path
    events_folder: Path | None


def render_handler_environment(environment: HandlerEnvironment) -> bytes:
    """The bytes of HandlerEnvironment.json; the events folder is also given under its
    preview name, which older extensions read."""
    body = {
        "logFolder": str(environment.log_folder),
        "configFolder": str(environment.config_folder),
        "statusFolder": str(environment.status_folder),
        "heartbeatFile": str(environment.heartbeat_file),
    }
    if environment.events_folder is not None:
        body["eventsFolder"] = body["eventsFolder_preview"] = str(environment.events_folder)
    document = [{"name": environment.name, "version": 1.0, "handlerEnvironment": body}]
    return json.dumps(document).encode()


def parse_handler_environment(
    data: bytes, handler_dir: Path, *, where: str | Path = "HandlerEnvironment.json"
) -> HandlerEnvironment:
    """Parse HandlerEnvironment.json (a JSON array; element 0 counts).

    A UTF-8 BOM is tolerated. Relative folders are taken relative to `handler_dir`.
    `eventsFolder` and `heartbeatFile` are optional (older agents do not write them).
    """
    try:
        document: Any = json.loads(data.decode("utf-8-sig"))
    except ValueError as exc:
        raise HandlerEnvironmentError(f"{where}: not UTF-8 JSON ({exc})") from exc
    if isinstance(document, list) and document:
        document = document[0]
    if not isinstance(document, dict) or not isinstance(document.get("handlerEnvironment"), dict):
        raise HandlerEnvironmentError(f"{where}: no handlerEnvironment object in element 0")
    body: dict[str, Any] = document["handlerEnvironment"]

    def folder(key: str, *, required: bool = True) -> Path | None:
        value = body.get(key)
        if isinstance(value, str) and value:
            return handler_dir / value
        if required:
            raise HandlerEnvironmentError(f"{where}: handlerEnvironment.{key}: missing")
        return None

    name = document.get("name")
    log_folder = folder("logFolder")
    config_folder = folder("configFolder")
    status_folder = folder("statusFolder")
    heartbeat = folder("heartbeatFile", required=False)
    assert log_folder is not None
    assert config_folder is not None
    assert status_folder is not None
    return HandlerEnvironment(
        name=name if isinstance(name, str) else None,
        log_folder=log_folder,
        config_folder=config_folder,
        status_folder=status_folder,
        heartbeat_file=heartbeat if heartbeat is not None else handler_dir / HEARTBEAT_NAME,
        events_folder=folder("eventsFolder", required=False),
    )


class ProtocolVariables(Value):
    """The protocol variables of one command (`Variable`), typed."""

    sequence_number: int | None
    extension_name: str | None
    handler_version: str | None
    update_to_version: str | None
    updating_from_version: str | None
    disable_exit_code: int | None
    disable_exit_codes: dict[str, int | None]
    uninstall_exit_code: int | None


def _exit_code(value: str | None) -> int | None:
    """An exit-code variable: an integer, or None for `NOT_RUN`, absent or garbage."""
    if value is None or value.strip().upper() == NOT_RUN or not INTEGER.fullmatch(value.strip()):
        return None
    return int(value)


def _exit_codes(value: str | None) -> dict[str, int | None]:
    """The multi-config JSON `[{"extensionName": .., "exitCode": ".."}]`; junk is skipped."""
    if not value:
        return {}
    try:
        document: Any = json.loads(value)
    except ValueError:
        return {}
    result: dict[str, int | None] = {}
    for entry in document if isinstance(document, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("extensionName"), str):
            code = entry.get("exitCode")
            result[entry["extensionName"]] = _exit_code(
                str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
            )
    return result


def read_protocol_variables(env: Mapping[str, str]) -> ProtocolVariables:
    """Read the protocol variables from `env`; a non-integer sequence number is an error."""
    seq_text = env.get(Variable.SEQUENCE_NUMBER)
    sequence: int | None = None
    if seq_text is not None and seq_text.strip():
        if not INTEGER.fullmatch(seq_text.strip()) or int(seq_text) < 0:
            raise HandlerEnvironmentError(
                f"ConfigSequenceNumber must be a non-negative integer, got {seq_text!r}"
            )
        sequence = int(seq_text)
    return ProtocolVariables(
        sequence_number=sequence,
        extension_name=env.get(Variable.EXTENSION_NAME) or None,
        handler_version=env.get(Variable.EXTENSION_VERSION) or None,
        update_to_version=env.get(Variable.UPDATE_TO_VERSION) or None,
        updating_from_version=env.get(Variable.UPDATING_FROM_VERSION) or None,
        disable_exit_code=_exit_code(env.get(Variable.DISABLE_EXIT_CODE)),
        disable_exit_codes=_exit_codes(env.get(Variable.DISABLE_EXIT_CODES)),
        uninstall_exit_code=_exit_code(env.get(Variable.UNINSTALL_EXIT_CODE)),
    )
