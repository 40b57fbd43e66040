"""The native JSON goal state: `{"id": ..., "extensions": [...]}` with ARM property names.

The document is structured with the project's strict converter into private value classes
(so every problem is collected in one pass, each with its JSON path), then mapped onto the
model. The ARM parser reuses `ExtensionProperties` for an extension resource's `properties`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NewType

from exthandler._convert import Converter, Invalid, error_lines, json_kind, make_converter
from exthandler._errors import GoalStateError
from exthandler._model import (
    AgentFamily,
    EncryptedProtectedSettings,
    ExtensionGoal,
    GoalState,
    GoalStateFormat,
    HandlerName,
    PlainProtectedSettings,
    RequestedState,
    Version,
    validate_extension_name,
)
from exthandler._values import Value

from ._common import (
    located_consistency_problems,
    parse_encrypted,
    parse_state,
    parse_thumbprint,
    parse_version,
    shown,
)
from ._families import check_family_name

__all__ = [
    "ExtensionProperties",
    "NativeExtension",
    "goal_state_converter",
    "parse_native",
    "to_goal",
]

ExtensionName = NewType("ExtensionName", str)
GoalStateId = NewType("GoalStateId", str)
UpdateTag = NewType("UpdateTag", str)
EncodedSignature = NewType("EncodedSignature", str)
Thumbprint = NewType("Thumbprint", str)
JsonObject = NewType("JsonObject", dict[str, Any])
PackageLocation = NewType("PackageLocation", str)
FamilyName = NewType("FamilyName", str)
# A plain object (PlainProtectedSettings) or encrypted base64 text (str).
ProtectedValue = PlainProtectedSettings | str | None

# Spellings of the model's field names in consistency problems.
NATIVE_RENAMES = {".dependsOn[": ".provisionAfterExtensions[", ".version": ".typeHandlerVersion"}


class ExtensionProperties(Value):
    """An extension as the native format and an ARM resource's `properties` write it."""

    publisher: str
    type: str
    typeHandlerVersion: Version
    autoUpgradeMinorVersion: bool | None = None
    useExactVersion: bool | None = None
    state: RequestedState | None = None
    settings: JsonObject | None = None
    protectedSettings: ProtectedValue = None
    protectedSettingsCertThumbprint: Thumbprint | None = None
    forceUpdateTag: UpdateTag | None = None
    provisionAfterExtensions: list[ExtensionName] | None = None
    location: PackageLocation | None = None
    failoverLocations: list[PackageLocation] | None = None
    encodedSignature: EncodedSignature | None = None


class NativeExtension(ExtensionProperties):
    """A native extension: the properties plus its own `name`."""

    name: ExtensionName


class NativeAgentFamily(Value):
    """An agent family for self-update (docs/operating.md)."""

    name: FamilyName
    version: Version | None = None
    uris: list[PackageLocation] | None = None


class NativeDocument(Value):
    extensions: list[NativeExtension]
    id: GoalStateId | None = None
    agentFamilies: list[NativeAgentFamily] | None = None


def _reason(check: Any, value: object) -> Any:
    """Run a `_common` check, turning its ValueError into the converter's `Invalid`."""
    try:
        return check(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _extension_name(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be an extension name string, not {json_kind(value)}")
    return str(_reason(validate_extension_name, value))


def _goal_state_id(value: object, _: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {shown(value)}")
    return value


def _update_tag(value: object, _: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Invalid(f"must be a string or a number, not {json_kind(value)}")


def _package_location(value: object, _: object) -> str:
    """A PluginVersionManifest location: a path or a URL of a scheme the runtime reads.
    The reason never quotes the value's credentials."""
    from exthandler._remote import parse_location

    if not isinstance(value, str):
        raise Invalid(f"must be a path or URL string, not {json_kind(value)}")
    if not value.strip():
        raise Invalid("must be a path or URL, not empty")
    try:
        parse_location(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def _family_name(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be an agent family name string, not {json_kind(value)}")
    return str(_reason(check_family_name, value))


def _encoded_signature(value: object, _: object) -> str:
    return str(_reason(parse_encrypted, value))


def _json_object(value: object, _: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"must be an object or null, not {json_kind(value)}")
    return value


def _protected(value: object, _: object) -> ProtectedValue:
    if value is None:
        return None
    if isinstance(value, dict):
        return PlainProtectedSettings(value=value)
    if isinstance(value, str):
        return str(_reason(parse_encrypted, value))
    raise Invalid(
        f"must be an object (plain) or a base64 string (encrypted), not {json_kind(value)}"
    )


def _cross_field_problems(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems that involve two fields; the single-field ones come from the hooks."""
    problems: list[tuple[str, str]] = []
    publisher, type_ = raw.get("publisher"), raw.get("type")
    if isinstance(publisher, str) and isinstance(type_, str):
        try:
            HandlerName.parse(f"{publisher}.{type_}")
            if "." in type_:
                raise ValueError(f"{shown(type_)} is not a handler type (it has a dot)")
        except ValueError as exc:
            try:
                HandlerName.parse(f"{publisher}.Type")
                where = ".type"
            except ValueError:
                where = ".publisher"
            problems.append((where, str(exc)))
    protected = raw.get("protectedSettings")
    thumbprint = raw.get("protectedSettingsCertThumbprint")
    if isinstance(protected, str) and thumbprint is None:
        problems.append(
            (
                ".protectedSettingsCertThumbprint",
                "required when protectedSettings is encrypted (a base64 string)",
            )
        )
    elif not isinstance(protected, str) and thumbprint is not None:
        problems.append(
            (
                ".protectedSettingsCertThumbprint",
                "only allowed with encrypted protectedSettings (a base64 string)",
            )
        )
    return problems


def _with_cross_checks(cls: type[Any], converter: Converter) -> Any:
    def structure(value: Any, cl: Any) -> Any:
        if value.__class__ is not dict and not isinstance(value, Mapping):
            raise Invalid(f"must be an object, not {json_kind(value)}")
        problems = _cross_field_problems(value)
        try:
            document = converter.structure_attrs(value, cl)
        except Invalid as exc:
            raise Invalid.many([*exc.problems, *problems]) from None
        if problems:
            raise Invalid.many(problems)
        return document

    return structure


def goal_state_converter() -> Converter:
    """The project's converter with the hooks that read goal-state documents."""
    converter = make_converter()
    converter.register_structure_hook(Version, lambda v, _: _reason(parse_version, v))
    converter.register_structure_hook(RequestedState, lambda v, _: _reason(parse_state, v))
    converter.register_structure_hook(Thumbprint, lambda v, _: _reason(parse_thumbprint, v))
    converter.register_structure_hook(ExtensionName, _extension_name)
    converter.register_structure_hook(GoalStateId, _goal_state_id)
    converter.register_structure_hook(UpdateTag, _update_tag)
    converter.register_structure_hook(EncodedSignature, _encoded_signature)
    converter.register_structure_hook(JsonObject, _json_object)
    converter.register_structure_hook(PackageLocation, _package_location)
    converter.register_structure_hook(FamilyName, _family_name)
    converter.register_structure_hook(ProtectedValue, _protected)
    for cls in (ExtensionProperties, NativeExtension):
        converter.register_structure_hook(cls, _with_cross_checks(cls, converter))
    return converter


def to_goal(name: str, props: ExtensionProperties) -> ExtensionGoal:
    """Map structured (and therefore valid) properties onto the model."""
    protected: PlainProtectedSettings | EncryptedProtectedSettings | None
    if isinstance(props.protectedSettings, str):
        assert props.protectedSettingsCertThumbprint is not None  # a cross-field check
        protected = EncryptedProtectedSettings(
            data=props.protectedSettings, thumbprint=props.protectedSettingsCertThumbprint
        )
    else:
        assert props.protectedSettings is None or isinstance(
            props.protectedSettings, PlainProtectedSettings
        )
        protected = props.protectedSettings
    return ExtensionGoal(
        name=name,
        # The cross-field check parsed the name: the type has no dot, the whole matches.
        handler=HandlerName(props.publisher, props.type),
        version=props.typeHandlerVersion,
        state=props.state or RequestedState.ENABLED,
        auto_upgrade_minor=bool(props.autoUpgradeMinorVersion),
        use_exact_version=bool(props.useExactVersion),
        public_settings=props.settings,
        protected_settings=protected,
        force_update_tag=props.forceUpdateTag,
        depends_on=tuple(props.provisionAfterExtensions or ()),
        package_locations=tuple(
            dict.fromkeys(
                [*([props.location] if props.location else []), *(props.failoverLocations or ())]
            )
        )
        if props.location or props.failoverLocations
        else (),
        encoded_signature=props.encodedSignature,
    )


def parse_native(document: object, *, default_id: str) -> GoalState:
    """Read a parsed native JSON document; raise GoalStateError listing every problem."""
    converter = goal_state_converter()
    try:
        structured = converter.structure(document, NativeDocument)
    except Invalid as exc:
        raise GoalStateError(error_lines(exc)) from None
    extensions = tuple(to_goal(ext.name, ext) for ext in structured.extensions)
    problems = located_consistency_problems(
        extensions,
        paths=[f"$.extensions[{i}]" for i in range(len(extensions))],
        root="$.extensions",
        renames=NATIVE_RENAMES,
    )
    if problems:
        raise GoalStateError(problems)
    families = tuple(
        AgentFamily(name=f.name, version=f.version, uris=tuple(dict.fromkeys(f.uris or ())))
        for f in structured.agentFamilies or ()
    )
    return GoalState(
        id=structured.id or default_id,
        extensions=extensions,
        format=GoalStateFormat.NATIVE,
        agent_families=families,
    )
