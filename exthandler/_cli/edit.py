"""Edit a native goal-state file in place, as `az vm extension set/delete` edit a VM model."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from .._errors import GoalStateError
from .._fs import write_atomic
from .._goalstate import parse_goal_state
from .._model import GoalStateFormat

__all__ = ["delete_extension", "set_extension"]


def _load(path: Path) -> dict[str, Any]:
    """The file's document, validated; an absent file is an empty goal state."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {"extensions": []}
    except OSError as exc:
        raise GoalStateError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    goal = parse_goal_state(data, source=str(path))
    if goal.format is not GoalStateFormat.NATIVE:
        raise GoalStateError(
            [f"{path}: is a {goal.format} goal state; only native goal-state files can be edited"]
        )
    document: dict[str, Any] = json.loads(data.decode("utf-8-sig"))
    return document


def _holds_plain_secrets(document: dict[str, Any]) -> bool:
    """Whether an extension has protected settings in clear (an object, not encrypted text)."""
    return any(
        isinstance(entry, dict) and isinstance(entry.get("protectedSettings"), dict)
        for entry in document["extensions"]
    )


def _save(path: Path, document: dict[str, Any]) -> None:
    """Replace the file; it is 0600 when new or when it holds protected settings in clear
    (an existing file keeps its mode otherwise)."""
    data = (json.dumps(document, indent=2) + "\n").encode()
    parse_goal_state(data, source=str(path))  # never write a file `apply` would refuse
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600  # it may hold protected settings in clear
    if _holds_plain_secrets(document):
        mode = 0o600  # whatever it was: the secrets are readable by its owner only
    write_atomic(path, data, mode=mode)


def _index(document: dict[str, Any], name: str) -> int | None:
    for index, entry in enumerate(document["extensions"]):
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() == name.lower():
            return index
    return None


def set_extension(
    path: Path,
    *,
    name: str,
    publisher: str,
    type_: str,
    version: str,
    settings: dict[str, Any] | None = None,
    protected_settings: dict[str, Any] | None = None,
    auto_upgrade_minor: bool = True,
) -> dict[str, Any]:
    """Add the extension `name`, or change it; fields not given keep their value.

    Returns the extension's entry as written. The file is created if missing.
    """
    document = _load(path)
    index = _index(document, name)
    entry: dict[str, Any] = {} if index is None else dict(document["extensions"][index])
    entry.update(
        name=entry.get("name", name),
        publisher=publisher,
        type=type_,
        typeHandlerVersion=version,
        autoUpgradeMinorVersion=auto_upgrade_minor,
    )
    if settings is not None:
        entry["settings"] = settings
    if protected_settings is not None:
        entry["protectedSettings"] = protected_settings
        entry.pop("protectedSettingsCertThumbprint", None)
    if index is None:
        document["extensions"].append(entry)
    else:
        document["extensions"][index] = entry
    _save(path, document)
    return entry


def delete_extension(path: Path, *, name: str) -> None:
    """Remove the extension `name`; a later apply then uninstalls it."""
    if not path.exists():
        raise GoalStateError([f"{path}: no such goal-state file"])
    document = _load(path)
    index = _index(document, name)
    if index is None:
        raise GoalStateError([f"{path}: no extension named {name!r}"])
    del document["extensions"][index]
    _save(path, document)
