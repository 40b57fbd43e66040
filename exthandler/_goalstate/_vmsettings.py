"""vmSettings JSON, the HostGAPlugin's ("FastTrack") goal state (docs/goal-state-formats.md).

Keys match case-insensitively and unknown keys are ignored, as the wire formats evolve
without notice. Like ExtensionsConfig, only unidentifiable extensions are refused; an
extension whose settings cannot be used is listed with `settings_error` set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exthandler._convert import Invalid, json_kind
from exthandler._errors import GoalStateError
from exthandler._model import (
    ExtensionGoal,
    GoalState,
    GoalStateFormat,
    RequestedState,
    StatusBlobType,
    StatusUploadBlob,
    validate_extension_name,
)

from ._common import (
    WireSettings,
    located_consistency_problems,
    parse_encrypted,
    parse_handler_name,
    parse_state,
    parse_status_blob_type,
    parse_status_blob_url,
    parse_version,
    parse_wire_number,
    wire_flag,
    wire_handler_settings,
)
from ._families import json_families

__all__ = ["is_vm_settings", "parse_vm_settings"]


def _fields(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()}


def is_vm_settings(document: object) -> bool:
    """Whether a parsed JSON document is vmSettings (it has `extensionGoalStates`)."""
    return isinstance(document, Mapping) and "extensiongoalstates" in _fields(document)


class _Reader:
    """Collects goals and structural problems from one vmSettings document."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.goals: list[ExtensionGoal] = []
        self.paths: list[str] = []

    def field(
        self,
        fields: dict[str, Any],
        path: str,
        key: str,
        check: Callable[[Any], Any],
        *,
        required: bool = False,
    ) -> Any:
        value = fields.get(key.lower())
        if value is None:
            if required:
                self.problems.append(f"{path}.{key}: required")
            return None
        try:
            return check(value)
        except ValueError as exc:
            self.problems.append(f"{path}.{key}: {exc}")
            return None

    def read(self, document: Mapping[Any, Any]) -> None:
        states = _fields(document)["extensiongoalstates"]
        if states is None:
            return
        if not isinstance(states, list):
            self.problems.append(
                f"$.extensionGoalStates: must be an array, not {json_kind(states)}"
            )
            return
        for index, item in enumerate(states):
            path = f"$.extensionGoalStates[{index}]"
            if isinstance(item, Mapping):
                self.extension(_fields(item), path)
            else:
                self.problems.append(f"{path}: must be an object, not {json_kind(item)}")

    def status_upload_blob(self, document: Mapping[Any, Any]) -> StatusUploadBlob | None:
        """`statusUploadBlob: {"statusBlobType": "BlockBlob|PageBlob", "value": URL}`; a
        missing or empty value names no blob."""
        value = _fields(document).get("statusuploadblob")
        if value is None:
            return None
        path = "$.statusUploadBlob"
        if not isinstance(value, Mapping):
            self.problems.append(f"{path}: must be an object, not {json_kind(value)}")
            return None
        fields = _fields(value)
        if fields.get("value") in (None, ""):
            return None
        kind = self.field(fields, path, "statusBlobType", parse_status_blob_type)
        url = self.field(fields, path, "value", parse_status_blob_url)
        if url is None:
            return None
        return StatusUploadBlob(url=url, blob_type=kind or StatusBlobType.BLOCK_BLOB)

    def in_svd_seq_no(self, document: Mapping[Any, Any]) -> str | None:
        number = self.field(_fields(document), "$", "inSvdSeqNo", parse_wire_number)
        return None if number is None else str(number)

    def extension(self, fields: dict[str, Any], path: str) -> None:
        before = len(self.problems)
        handler = self.field(fields, path, "name", parse_handler_name, required=True)
        version = self.field(fields, path, "version", parse_version, required=True)
        state = self.field(fields, path, "state", parse_state) or RequestedState.ENABLED
        dependencies = self.dependencies(fields.get("dependson"), f"{path}.dependsOn")
        if len(self.problems) > before:
            return
        base: dict[str, Any] = {
            "handler": handler,
            "version": version,
            "state": state,
            "auto_upgrade_minor": wire_flag(fields.get("autoupgrade"), default=False),
            "use_exact_version": wire_flag(fields.get("useexactversion"), default=True),
            "package_locations": _locations(fields),
            "encoded_signature": self.field(fields, path, "encodedSignature", parse_encrypted),
        }
        seq_error: str | None = None
        try:
            seq = _optional_number(fields.get("settingsseqno"))
        except ValueError as exc:
            seq, seq_error = None, f"{path}.settingsSeqNo: {exc}"
        settings = fields.get("settings")
        settings = [] if settings is None else settings
        multi = wire_flag(fields.get("ismulticonfig"), default=False)
        if not isinstance(settings, list):
            reason = f"must be an array, not {json_kind(settings)}"
            if multi:
                self.problems.append(f"{path}.settings: {reason}")
                return
            seq_error = f"{path}.settings: {reason}"
        if not multi or not isinstance(settings, list):
            found: tuple[int | None, WireSettings, str | None]
            if seq_error is not None:
                found = (seq, WireSettings(), seq_error)
            elif len(settings) > 1:
                error = f"{path}.settings: has {len(settings)} entries, expected one"
                found = (seq, WireSettings(), error)
            elif settings:
                found = _entry(settings[0], f"{path}.settings[0]", seq)
            else:
                found = (seq, WireSettings(), None)
            self.add(path, _goal(str(handler), base, found, dependencies, None))
            return
        for index, entry in enumerate(settings):
            epath = f"{path}.settings[{index}]"
            if not isinstance(entry, Mapping):
                self.problems.append(f"{epath}: must be an object, not {json_kind(entry)}")
                continue
            entry_fields = _fields(entry)
            name = self.field(
                entry_fields, epath, "extensionName", validate_extension_name, required=True
            )
            own = self.field(entry_fields, epath, "extensionState", parse_state) or state
            if name is None:
                continue
            if state is RequestedState.UNINSTALL:
                own = state  # removing the handler removes all its extensions
            found = (None, WireSettings(), seq_error) if seq_error else _entry(entry, epath, seq)
            self.add(epath, _goal(name, {**base, "state": own}, found, dependencies, True))

    def dependencies(self, value: object, path: str) -> list[tuple[str | None, int, list[str]]]:
        """`dependsOn` entries as (extension they apply to or None, level, targets)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.append(f"{path}: must be an array, not {json_kind(value)}")
            return []
        found = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, Mapping):
                self.problems.append(f"{where}: must be an object, not {json_kind(item)}")
                continue
            fields = _fields(item)
            level = self.field(fields, where, "dependencyLevel", parse_wire_number) or 0
            targets = []
            listed = fields.get("dependsonextension") or []
            if not isinstance(listed, list):
                listed = [listed]
            for j, target in enumerate(listed):
                target_fields = _fields(target) if isinstance(target, Mapping) else {}
                name = target_fields.get("extension") or target_fields.get("handler")
                if isinstance(name, str) and name:
                    targets.append(name)
                else:
                    self.problems.append(f"{where}.dependsOnExtension[{j}].handler: required")
            applies = fields.get("extensionname")
            found.append((applies if isinstance(applies, str) else None, level, targets))
        return found

    def add(self, path: str, goal: ExtensionGoal) -> None:
        self.goals.append(goal)
        self.paths.append(path)


def _locations(fields: dict[str, Any]) -> tuple[str, ...]:
    """`location`, `failoverLocation`, then `additionalLocations`: where the handler's
    PluginVersionManifest can be had, in the order to try them (non-strings ignored)."""
    found: list[object] = [fields.get("location"), fields.get("failoverlocation")]
    additional = fields.get("additionallocations")
    if isinstance(additional, list):
        found.extend(additional)
    texts = (item.strip() for item in found if isinstance(item, str))
    return tuple(dict.fromkeys(text for text in texts if text))


def _optional_number(value: object) -> int | None:
    return None if value is None else parse_wire_number(value)


def _entry(
    entry: object, path: str, default_seq: int | None
) -> tuple[int | None, WireSettings, str | None]:
    """One settings entry -> (sequence number, settings, error)."""
    if not isinstance(entry, Mapping):
        return default_seq, WireSettings(), f"{path}: must be an object, not {json_kind(entry)}"
    try:
        seq = _optional_number(_fields(entry).get("seqno"))
    except ValueError as exc:
        return None, WireSettings(), f"{path}.seqNo: {exc}"
    seq = default_seq if seq is None else seq
    try:
        return seq, wire_handler_settings(entry), None
    except Invalid as exc:
        suffix, reason = exc.problems[0]
        return seq, WireSettings(), f"{path}{suffix}: {reason}"


def _goal(
    name: str,
    base: dict[str, Any],
    found: tuple[int | None, WireSettings, str | None],
    dependencies: list[tuple[str | None, int, list[str]]],
    multi_config: bool | None,
) -> ExtensionGoal:
    seq, settings, error = found
    mine = [d for d in dependencies if d[0] is None or d[0].lower() == name.lower()]
    return ExtensionGoal(
        name=name,
        public_settings=settings.public,
        protected_settings=settings.protected,
        sequence_number=seq,
        settings_error=error,
        depends_on=tuple(dict.fromkeys(t for d in mine for t in d[2])),
        dependency_level=max((d[1] for d in mine), default=0),
        multi_config=multi_config,
        **base,
    )


def parse_vm_settings(document: Mapping[Any, Any], *, default_id: str) -> GoalState:
    """Read a parsed vmSettings document; raise GoalStateError listing every problem."""
    reader = _Reader()
    status_blob = reader.status_upload_blob(document)
    in_svd_seq_no = reader.in_svd_seq_no(document)
    reader.read(document)
    if not reader.problems:
        reader.problems = located_consistency_problems(
            tuple(reader.goals), paths=reader.paths, root="$.extensionGoalStates"
        )
    if reader.problems:
        raise GoalStateError(reader.problems)
    return GoalState(
        id=default_id,
        extensions=tuple(reader.goals),
        format=GoalStateFormat.VM_SETTINGS,
        status_upload_blob=status_blob,
        in_svd_seq_no=in_svd_seq_no,
        agent_families=json_families(document),
    )
