"""Edit a native goal-state file in place, as `az vm extension set/delete` edit a VM model."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import attrs

from .._errors import GoalStateError
from .._fs import write_atomic
from .._goalstate import parse_goal_state
from .._model import GoalStateFormat

__all__ = ["ExtensionEdit", "delete_extension", "set_extension"]


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


_SECRET_FIELDS = frozenset({"protectedSettings", "protectedSettingsCertThumbprint"})
_VALUE_FIELDS = ("publisher", "type", "typeHandlerVersion", "autoUpgradeMinorVersion")
_AUTO_UPGRADE = "autoUpgradeMinorVersion"


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


@attrs.frozen
class ExtensionEdit:
    """What `set_extension` did: the entry before (None when it was added) and after."""

    before: dict[str, Any] | None
    after: dict[str, Any]

    def changes(self) -> list[str]:
        """One line per changed field, as `name: field old -> new`; settings show no values
        (protected ones are secret, public ones may be long). A kept, unstated
        `autoUpgradeMinorVersion` is named as unchanged: it decides which versions run."""
        name = self.after["name"]
        after = self.after
        if self.before is None:
            return [
                f"{name}: added ({after['publisher']}.{after['type']} "
                f"{after['typeHandlerVersion']}, {_AUTO_UPGRADE} "
                f"{_shown(after[_AUTO_UPGRADE])})"
            ]
        before = self.before
        lines = []
        for key in [*_VALUE_FIELDS, "settings", *sorted(_SECRET_FIELDS)]:
            if before.get(key) == after.get(key) and (key in before) == (key in after):
                continue
            if key not in after:
                lines.append(f"{name}: {key} removed")
            elif key in _VALUE_FIELDS and key in before:
                lines.append(f"{name}: {key} {_shown(before[key])} -> {_shown(after[key])}")
            elif key in _VALUE_FIELDS:
                lines.append(f"{name}: {key} set to {_shown(after[key])}")
            else:
                lines.append(f"{name}: {key} {'changed' if key in before else 'set'}")
        if not lines:
            return [f"{name}: no change"]
        if not any(line.startswith(f"{name}: {_AUTO_UPGRADE} ") for line in lines):
            value = before.get(_AUTO_UPGRADE)
            kept = _shown(value) if value is not None else "not set, so false"
            lines.append(f"{name}: {_AUTO_UPGRADE} unchanged ({kept})")
        return lines


def set_extension(
    path: Path,
    *,
    name: str,
    publisher: str,
    type_: str,
    version: str,
    settings: dict[str, Any] | None = None,
    protected_settings: dict[str, Any] | None = None,
    auto_upgrade_minor: bool | None = None,
) -> ExtensionEdit:
    """Add the extension `name`, or change it; fields not given keep their value.

    `auto_upgrade_minor` None means: on for a new extension (as `az vm extension set`),
    the entry's own value (or none, which the format reads as off) for an existing one.
    The file is created if missing.
    """
    document = _load(path)
    index = _index(document, name)
    before: dict[str, Any] | None = None if index is None else document["extensions"][index]
    entry: dict[str, Any] = {} if before is None else dict(before)
    entry.update(name=entry.get("name", name), publisher=publisher, type=type_)
    entry["typeHandlerVersion"] = version
    if auto_upgrade_minor is not None or before is None:
        entry[_AUTO_UPGRADE] = True if auto_upgrade_minor is None else auto_upgrade_minor
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
    return ExtensionEdit(before=before, after=entry)


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
