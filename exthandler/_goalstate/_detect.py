"""Reading a goal state: decode the bytes, tell the format from the content, dispatch.

Whatever the input, the outcome is a GoalState or a GoalStateError listing every problem
found; no other exception escapes, so callers (the CLI's `validate`, the long-running
agent) can treat any file they are handed as untrusted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NoReturn

from exthandler._errors import GoalStateError
from exthandler._model import GoalState

from ._common import content_id

# Each format's parser is imported when a document of that format comes: a JSON goal
# state never loads the XML parser.

__all__ = ["load_goal_state", "parse_goal_state"]

_WHITESPACE = " \t\r\n\ufeff"


def _decode(data: bytes, source: str) -> str:
    """Text from bytes: UTF-8, or UTF-16/32 when a BOM or the JSON rules say so."""
    try:
        return data.decode(json.detect_encoding(data))
    except (UnicodeDecodeError, LookupError) as exc:
        raise GoalStateError([f"{source}: not valid text ({exc.__class__.__name__})"]) from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise GoalStateError([f"{source}: nested too deeply"]) from None
    except ValueError as exc:
        raise GoalStateError([f"{source}: not valid JSON ({exc})"]) from None


def _is_arm(document: object) -> bool:
    from ._arm import is_extension_resource

    if isinstance(document, list):
        return True
    if not isinstance(document, Mapping):
        return False
    return "$schema" in document or "resources" in document or is_extension_resource(document)


def _parse(data: bytes | str, source: str) -> GoalState:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    default_id = content_id(raw)
    text = data if isinstance(data, str) else _decode(data, source)
    if text.lstrip(_WHITESPACE).startswith("<"):
        # The XML parser reads the encoding declaration itself, so it gets the bytes.
        xml = text.lstrip(_WHITESPACE) if isinstance(data, str) else raw
        from ._xml import parse_extensions_config

        return parse_extensions_config(xml, default_id=default_id, source=source)
    document = _load_json(text, source)
    from ._vmsettings import is_vm_settings

    if is_vm_settings(document):
        from ._vmsettings import parse_vm_settings

        return parse_vm_settings(document, default_id=default_id)
    if _is_arm(document):
        from ._arm import parse_arm

        return parse_arm(document, default_id=default_id)
    if isinstance(document, Mapping) and "extensions" in document:
        from ._native import parse_native

        return parse_native(document, default_id=default_id)
    raise GoalStateError(
        [
            f"{source}: not a goal state: expected a JSON object with 'extensions' (native),"
            " an ARM template or resource list, an object with 'extensionGoalStates'"
            " (vmSettings), or ExtensionsConfig XML"
        ]
    )


def parse_goal_state(data: bytes | str, *, source: str = "<goal state>") -> GoalState:
    """Parse a goal state in any supported format, detected from its content.

    `source` names the input in problems about the document as a whole; problems inside it
    carry their path (`$.extensions[1].typeHandlerVersion`,
    `Extensions/Plugins/Plugin[2]@version`). Raises GoalStateError listing every problem.
    """
    try:
        return _parse(data, source)
    except RecursionError:
        raise GoalStateError([f"{source}: nested too deeply"]) from None


def load_goal_state(source: str | os.PathLike[str] | bytes) -> GoalState:
    """Parse a goal state from a file (a path), a URL (`file://`, `http(s)://`, `s3://`,
    `gs://`, `az://`, an Azure Blob URL with a SAS), or from bytes.

    An unreadable file or URL is a GoalStateError like any other problem; a URL is named
    in problems with its credentials redacted. Reading a URL blocks the caller (from async
    code, read it with `exthandler._remote.read` and call `parse_goal_state`).
    """
    if isinstance(source, bytes):
        return parse_goal_state(source)
    if isinstance(source, str):
        from exthandler._remote._url import is_url

        if is_url(source):
            return _load_url(source)
    path = os.fspath(source)
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise GoalStateError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_goal_state(data, source=path)


def _load_url(url: str) -> GoalState:
    """Fetch and parse the goal state at `url`, in a thread of its own with its own event
    loop (so that it works whether or not the caller runs one)."""
    import threading

    import anyio

    from exthandler._remote import Fetched, RemoteError, read, redact

    outcome: list[bytes | RemoteError] = []

    async def fetch() -> None:
        try:
            fetched = await read(url)
        except RemoteError as exc:
            outcome.append(exc)
            return
        assert isinstance(fetched, Fetched)
        outcome.append(fetched.data)

    worker = threading.Thread(target=anyio.run, args=(fetch,), name="exthandler-goal-fetch")
    worker.start()
    worker.join()
    if not outcome:
        raise GoalStateError([f"{redact(url)}: cannot read: the download did not finish"])
    result = outcome[0]
    if isinstance(result, RemoteError):
        raise GoalStateError([f"{result.location}: cannot read: {result.reason}"])
    return parse_goal_state(result, source=redact(url))
