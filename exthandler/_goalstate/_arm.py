"""ARM templates and resource lists: extension resources become extensions.

Every resource whose `type` ends in `extensions` (at any depth of nested `resources`)
contributes its name's last `/` segment and its `properties`, which are read exactly like a
native extension. Properties that ARM defines but the runtime has no use for are ignored.
Template expressions (`"[parameters('x')]"`) are not evaluated: a deployment would have
replaced them, so meeting one here is an error at its path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from exthandler._convert import Converter, Invalid, error_items, json_kind, key_suffix
from exthandler._errors import GoalStateError
from exthandler._model import ExtensionGoal, GoalState, GoalStateFormat, validate_extension_name

from ._common import located_consistency_problems
from ._native import ExtensionProperties, goal_state_converter, to_goal

__all__ = ["is_extension_resource", "parse_arm"]

# Properties of Microsoft.Compute/virtualMachines/extensions that do not affect the runtime.
_IGNORED_PROPERTIES = frozenset(
    {
        "enableAutomaticUpgrade",
        "suppressFailures",
        "instanceView",
        "protectedSettingsFromKeyVault",
        "provisioningState",
    }
)
_RENAMES = {
    ".dependsOn[": ".properties.provisionAfterExtensions[",
    ".version": ".properties.typeHandlerVersion",
}
_EXPRESSION = "template expressions are not evaluated"


def is_extension_resource(value: Mapping[str, Any]) -> bool:
    """Whether a JSON object is an ARM resource whose type ends in `extensions`."""
    type_ = value.get("type")
    return isinstance(type_, str) and type_.lower().endswith("extensions")


def _is_expression(text: str) -> bool:
    return text.startswith("[") and not text.startswith("[[") and text.endswith("]")


def _literal(value: Any, path: str, expressions: list[str]) -> Any:
    """`value` with `[[` escapes undone; paths of expressions are added to `expressions`."""
    if isinstance(value, str):
        if _is_expression(value):
            expressions.append(path)
        return value[1:] if value.startswith("[[") else value
    if isinstance(value, list):
        return [_literal(v, f"{path}[{i}]", expressions) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: _literal(v, path + key_suffix(k), expressions) for k, v in value.items()}
    return value


def _resources(value: object, path: str, problems: list[str]) -> Iterator[tuple[str, Any]]:
    """Every extension resource below a `resources` value, with its path."""
    if isinstance(value, list):
        entries = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, Mapping):  # symbolic resource names (languageVersion 2.0)
        entries = [(path + key_suffix(k), v) for k, v in value.items()]
    else:
        problems.append(f"{path}: must be an array of resources, not {json_kind(value)}")
        return
    for where, resource in entries:
        if not isinstance(resource, Mapping):
            problems.append(f"{where}: a resource must be an object, not {json_kind(resource)}")
            continue
        if is_extension_resource(resource):
            yield where, resource
        if "resources" in resource:
            yield from _resources(resource["resources"], f"{where}.resources", problems)


def _extension(
    where: str, resource: Mapping[str, Any], problems: list[str], converter: Converter
) -> ExtensionGoal | None:
    expressions: list[str] = []
    name = _literal(resource.get("name"), f"{where}.name", expressions)
    properties = _literal(resource.get("properties"), f"{where}.properties", expressions)
    found: list[tuple[str, str]] = [(path, _EXPRESSION) for path in expressions]
    short_name: str | None = None
    if f"{where}.name" in expressions:
        pass
    elif not isinstance(name, str):
        found.append((f"{where}.name", f"must be a string, not {json_kind(name)}"))
    else:
        try:
            short_name = validate_extension_name(name.rpartition("/")[2])
        except ValueError as exc:
            found.append((f"{where}.name", str(exc)))
    props: ExtensionProperties | None = None
    if not isinstance(properties, Mapping):
        found.append((f"{where}.properties", f"must be an object, not {json_kind(properties)}"))
    else:
        used = {k: v for k, v in properties.items() if k not in _IGNORED_PROPERTIES}
        try:
            props = converter.structure(used, ExtensionProperties)
        except Invalid as exc:
            for path, reason in error_items(exc, path=f"{where}.properties"):
                # A field holding an expression was already reported as such.
                if not any(path == e or path.startswith((e + ".", e + "[")) for e in expressions):
                    found.append((path, reason))
    problems.extend(f"{path}: {reason}" for path, reason in found)
    if found or short_name is None or props is None:
        return None
    return to_goal(short_name, props)


def parse_arm(document: object, *, default_id: str) -> GoalState:
    """Read an ARM template, a resource list, or a single extension resource."""
    problems: list[str] = []
    if isinstance(document, Mapping) and "resources" in document:
        found = list(_resources(document["resources"], "$.resources", problems))
        root = "$.resources"
    elif isinstance(document, Mapping):
        found, root = [("$", document)], "$"
    else:
        found = list(_resources(document, "$", problems))
        root = "$"
    extensions: list[ExtensionGoal] = []
    paths: list[str] = []
    converter = goal_state_converter()
    for where, resource in found:
        goal = _extension(where, resource, problems, converter)
        if goal is not None:
            extensions.append(goal)
            paths.append(where)
    if problems:
        raise GoalStateError(problems)
    problems = located_consistency_problems(
        tuple(extensions), paths=paths, root=root, renames=_RENAMES
    )
    if problems:
        raise GoalStateError(problems)
    return GoalState(id=default_id, extensions=tuple(extensions), format=GoalStateFormat.ARM)
