"""ExtensionsConfig XML, the WireServer's goal state (docs/goal-state-formats.md).

`Plugins/Plugin` says which handler runs at which version and in which state;
`PluginSettings/Plugin` (matched by name, case-insensitively, and version) carries its
settings and dependencies. Only a document whose plugins cannot be identified is refused:
a plugin whose settings are unusable is still listed, with `settings_error` set, so that it
is reported in error rather than silently dropped. Unknown elements and attributes are
ignored. Paths are XPath-like and 1-based: `Extensions/Plugins/Plugin[2]@version`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import defusedxml
import defusedxml.ElementTree

from exthandler._convert import Invalid
from exthandler._errors import GoalStateError
from exthandler._model import (
    ExtensionGoal,
    GoalState,
    GoalStateFormat,
    RequestedState,
    StatusBlobType,
    StatusUploadBlob,
    Version,
    validate_extension_name,
)
from exthandler._values import Value, field

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
    shown,
    wire_flag,
    wire_handler_settings,
)
from ._families import xml_families

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

__all__ = ["parse_extensions_config"]

_RENAMES = {".name": "@name", ".version": "@version"}


def _local(tag: object) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name.lower()]


def _attr(element: Element, name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in element.attrib.items() if _local(k) == wanted), None)


class _Settings(Value):
    """What one RuntimeSettings / ExtensionRuntimeSettings element yields."""

    sequence_number: int | None = None
    settings: WireSettings = field(default_factory=WireSettings)
    error: str | None = None


class _Dependency(Value):
    name: str | None
    level: int
    targets: tuple[str, ...]


def _runtime_settings(element: Element, path: str, *, is_json: bool) -> _Settings:
    seq_text = _attr(element, "seqNo")
    try:
        seq = None if seq_text is None else parse_wire_number(seq_text)
    except ValueError as exc:
        return _Settings(error=f"{path}@seqNo: {exc}")
    if seq_text is None:
        return _Settings(error=f"{path}@seqNo: required")
    text = (element.text or "").strip()
    if not text:
        return _Settings(sequence_number=seq)
    if not is_json:
        return _Settings(sequence_number=seq, error=f"{path}: only JSON settings are supported")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return _Settings(sequence_number=seq, error=f"{path}: not valid JSON ({exc})")
    try:
        return _Settings(sequence_number=seq, settings=_handler_settings(document))
    except ValueError as exc:
        return _Settings(sequence_number=seq, error=f"{path}: {exc}")


def _handler_settings(document: Any) -> WireSettings:
    """`{"runtimeSettings": [{"handlerSettings": {...}}]}` -> the settings it carries."""
    if not isinstance(document, dict):
        raise ValueError("the settings must be a JSON object with runtimeSettings")
    fields = {str(k).lower(): v for k, v in document.items()}
    entries = fields.get("runtimesettings")
    if not isinstance(entries, list):
        raise ValueError("runtimeSettings: must be an array")
    if len(entries) > 1:
        raise ValueError(f"runtimeSettings: has {len(entries)} entries, expected one")
    if not entries:
        return WireSettings()
    if not isinstance(entries[0], dict):
        raise ValueError("runtimeSettings[0]: must be an object")
    entry = {str(k).lower(): v for k, v in entries[0].items()}
    try:
        return wire_handler_settings(entry.get("handlersettings"))
    except Invalid as exc:
        suffix, reason = exc.problems[0]
        raise ValueError(f"runtimeSettings[0].handlerSettings{suffix}: {reason}") from None


class _Reader:
    """Walks one ExtensionsConfig document, collecting goals and structural problems."""

    def __init__(self, root: Element) -> None:
        self.root = root
        self.problems: list[str] = []
        self.goals: list[ExtensionGoal] = []
        self.paths: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(f"{path}: {reason}")

    def required(
        self, element: Element, path: str, name: str, check: Any, *, optional: bool = False
    ) -> Any:
        value = _attr(element, name)
        if value is None:
            if not optional:
                self.fail(f"{path}@{name}", "required")
            return None
        try:
            return check(value)
        except ValueError as exc:
            self.fail(f"{path}@{name}", str(exc))
            return None

    def single(self, parent: Element, name: str, path: str) -> Element | None:
        found = _children(parent, name)
        if len(found) > 1:
            self.fail(f"{path}/{name}", f"appears {len(found)} times, expected once")
        return found[0] if found else None

    def read(self) -> None:
        plugins = self.single(self.root, "Plugins", "Extensions")
        if plugins is None:
            self.fail("Extensions/Plugins", "required")
            return
        settings_root = self.single(self.root, "PluginSettings", "Extensions")
        settings: list[tuple[str, Element, str, str | None]] = []
        if settings_root is not None:
            for index, entry in enumerate(_children(settings_root, "Plugin"), start=1):
                path = f"Extensions/PluginSettings/Plugin[{index}]"
                name = self.required(entry, path, "name", str)
                if name is not None:
                    settings.append((path, entry, name.lower(), _attr(entry, "version")))
        for index, plugin in enumerate(_children(plugins, "Plugin"), start=1):
            self.plugin(plugin, f"Extensions/Plugins/Plugin[{index}]", settings)

    def status_upload_blob(self) -> StatusUploadBlob | None:
        """`<StatusUploadBlob statusBlobType="BlockBlob|PageBlob">SAS URL</...>`; an empty
        element names no blob."""
        element = self.single(self.root, "StatusUploadBlob", "Extensions")
        if element is None or not (element.text or "").strip():
            return None
        path = "Extensions/StatusUploadBlob"
        kind = self.required(element, path, "statusBlobType", parse_status_blob_type, optional=True)
        url = parse_status_blob_url(element.text)
        return StatusUploadBlob(url=url, blob_type=kind or StatusBlobType.BLOCK_BLOB)

    def in_svd_seq_no(self) -> str | None:
        """`<InVMGoalStateMetaData inSvdSeqNo="N" .../>`."""
        element = self.single(self.root, "InVMGoalStateMetaData", "Extensions")
        if element is None:
            return None
        path = "Extensions/InVMGoalStateMetaData"
        number = self.required(element, path, "inSvdSeqNo", parse_wire_number, optional=True)
        return None if number is None else str(number)

    def plugin(
        self,
        plugin: Element,
        path: str,
        settings: list[tuple[str, Element, str, str | None]],
    ) -> None:
        handler = self.required(plugin, path, "name", parse_handler_name)
        version = self.required(plugin, path, "version", parse_version)
        state = self.state(plugin, path, RequestedState.ENABLED)
        if handler is None or version is None or state is None:
            return
        base: dict[str, Any] = {
            "handler": handler,
            "version": version,
            "state": state,
            "auto_upgrade_minor": wire_flag(_attr(plugin, "autoUpgrade"), default=False),
            "use_exact_version": wire_flag(_attr(plugin, "useExactVersion"), default=True),
            "package_locations": _locations(plugin),
            "encoded_signature": self.required(
                plugin, path, "encodedSignature", parse_encrypted, optional=True
            ),
        }
        matches = [s for s in settings if s[2] == handler.key]
        same = [s for s in matches if _same_version(s[3], version)]
        if not same:
            error = None
            if matches:
                error = f"{matches[0][0]}: settings are for version {matches[0][3]}, not {version}"
            self.add(path, ExtensionGoal(name=str(handler), settings_error=error, **base))
            return
        spath, entry = same[0][0], same[0][1]
        if len(same) > 1:
            error = f"{spath}: {len(same)} PluginSettings entries for this plugin"
            self.add(path, ExtensionGoal(name=str(handler), settings_error=error, **base))
            return
        is_json = wire_flag(_attr(plugin, "isJson"), default=True)
        dependencies = self.dependencies(entry, spath)
        multi = _children(entry, "ExtensionRuntimeSettings")
        single = _children(entry, "RuntimeSettings")
        if not multi:
            if len(single) > 1:
                found = _Settings(error=f"{spath}/RuntimeSettings: appears {len(single)} times")
            elif single:
                found = _runtime_settings(single[0], f"{spath}/RuntimeSettings", is_json=is_json)
            else:
                found = _Settings()
            goal = _goal(str(handler), base, found, dependencies, multi_config=None)
            self.add(path, goal)
            return
        if single:
            found = _Settings(
                error=f"{spath}: has both RuntimeSettings and ExtensionRuntimeSettings"
            )
            self.add(path, _goal(str(handler), base, found, dependencies, multi_config=None))
            return
        for index, element in enumerate(multi, start=1):
            epath = f"{spath}/ExtensionRuntimeSettings[{index}]"
            name = self.required(element, epath, "name", validate_extension_name)
            own_state = self.state(element, epath, state)
            if name is None or own_state is None:
                continue
            found = _runtime_settings(element, epath, is_json=is_json)
            if state is RequestedState.UNINSTALL:
                own_state = state  # removing the handler removes all its extensions
            goal = _goal(name, {**base, "state": own_state}, found, dependencies, True)
            self.add(epath, goal)

    def state(self, element: Element, path: str, default: RequestedState) -> RequestedState | None:
        text = _attr(element, "state")
        if text is None:
            return default
        try:
            return parse_state(text)
        except ValueError as exc:
            self.fail(f"{path}@state", str(exc))
            return None

    def dependencies(self, entry: Element, path: str) -> list[_Dependency]:
        found = []
        for index, element in enumerate(_children(entry, "DependsOn"), start=1):
            dpath = f"{path}/DependsOn[{index}]"
            level = self.required(
                element, dpath, "dependencyLevel", parse_wire_number, optional=True
            )
            targets = []
            for j, target in enumerate(_children(element, "DependsOnExtension"), start=1):
                name = _attr(target, "extension") or _attr(target, "handler")
                if not name:
                    self.fail(f"{dpath}/DependsOnExtension[{j}]@handler", "required")
                else:
                    targets.append(name)
            found.append(
                _Dependency(name=_attr(element, "name"), level=level or 0, targets=tuple(targets))
            )
        return found

    def add(self, path: str, goal: ExtensionGoal) -> None:
        self.goals.append(goal)
        self.paths.append(path)


def _locations(plugin: Element) -> tuple[str, ...]:
    """`location`, `failoverlocation`, then each `additionalLocations/additionalLocation`:
    where the handler's PluginVersionManifest can be had, in the order to try them."""
    found = [_attr(plugin, "location"), _attr(plugin, "failoverlocation")]
    for group in _children(plugin, "additionalLocations"):
        found.extend(item.text for item in _children(group, "additionalLocation"))
    return tuple(dict.fromkeys(text.strip() for text in found if text and text.strip()))


def _same_version(text: str | None, version: Version) -> bool:
    try:
        return text is not None and parse_version(text) == version
    except ValueError:
        return False


def _goal(
    name: str,
    base: dict[str, Any],
    found: _Settings,
    dependencies: list[_Dependency],
    multi_config: bool | None,
) -> ExtensionGoal:
    """One goal; DependsOn elements apply to all extensions, or to the one they name."""
    mine = [d for d in dependencies if d.name is None or d.name.lower() == name.lower()]
    depends_on = tuple(dict.fromkeys(t for d in mine for t in d.targets))
    return ExtensionGoal(
        name=name,
        public_settings=found.settings.public,
        protected_settings=found.settings.protected,
        sequence_number=found.sequence_number,
        settings_error=found.error,
        depends_on=depends_on,
        dependency_level=max((d.level for d in mine), default=0),
        multi_config=multi_config,
        **base,
    )


def parse_extensions_config(
    data: bytes | str, *, default_id: str, source: str = "<goal state>"
) -> GoalState:
    """Read ExtensionsConfig XML; raise GoalStateError listing every structural problem."""
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise GoalStateError([f"{source}: refused XML ({exc})"]) from None
    except (defusedxml.ElementTree.ParseError, ValueError, LookupError) as exc:
        raise GoalStateError([f"{source}: not valid XML ({exc})"]) from None
    if _local(root.tag) != "extensions":
        raise GoalStateError([f"{source}: the root element is {shown(root.tag)}, not Extensions"])
    reader = _Reader(root)
    incarnation = reader.required(
        root, "Extensions", "goalStateIncarnation", parse_wire_number, optional=True
    )
    status_blob = reader.status_upload_blob()
    in_svd_seq_no = reader.in_svd_seq_no()
    reader.read()
    if not reader.problems:
        reader.problems = located_consistency_problems(
            tuple(reader.goals), paths=reader.paths, root="Extensions/Plugins", renames=_RENAMES
        )
    if reader.problems:
        raise GoalStateError(reader.problems)
    return GoalState(
        id=default_id,
        extensions=tuple(reader.goals),
        format=GoalStateFormat.EXTENSIONS_CONFIG,
        incarnation=incarnation,
        status_upload_blob=status_blob,
        in_svd_seq_no=in_svd_seq_no,
        agent_families=xml_families(root),
    )
