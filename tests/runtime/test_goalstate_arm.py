"""ARM templates and resource lists as goal states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exthandler._errors import GoalStateError
from exthandler._goalstate import load_goal_state, parse_goal_state
from exthandler._model import GoalStateFormat, RequestedState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "goalstates"
TYPE = "Microsoft.Compute/virtualMachines/extensions"


def resource(name: Any = "vm/hello", type_: str = TYPE, **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "publisher": "Contoso.Examples",
        "type": "Hello",
        "typeHandlerVersion": "1.0",
    }
    props.update(properties)
    return {"type": type_, "name": name, "apiVersion": "2024-07-01", "properties": props}


def parse(document: Any) -> Any:
    return parse_goal_state(json.dumps(document))


def problems(document: Any) -> tuple[str, ...]:
    with pytest.raises(GoalStateError) as info:
        parse(document)
    return info.value.problems


def test_example_template() -> None:
    goal = load_goal_state(EXAMPLES / "arm-template.json")
    assert goal.format is GoalStateFormat.ARM
    assert [e.name for e in goal.extensions] == ["hello", "notes"]
    hello, notes = goal.extensions
    assert hello.auto_upgrade_minor
    assert notes.depends_on == ("hello",)
    assert hello.sequence_number is None
    assert notes.multi_config is None
    assert goal.id.startswith("sha256:")


@pytest.mark.parametrize(
    "document",
    [
        {"$schema": "x", "resources": [resource()]},
        {"resources": [resource()]},
        [resource()],
        resource(),
        [{"type": "Microsoft.Compute/virtualMachines", "name": "vm", "resources": [resource()]}],
        {"resources": {"vm": {"type": "x", "resources": {"cse": resource()}}}},
        [resource(type_="Microsoft.Compute/virtualMachineScaleSets/EXTENSIONS")],
        [resource(type_="extensions", name="hello")],
    ],
)
def test_shapes(document: Any) -> None:
    goal = parse(document)
    assert goal.format is GoalStateFormat.ARM
    assert [e.name for e in goal.extensions] == ["hello"]


def test_other_resources_and_ignored_properties() -> None:
    goal = parse(
        [
            {"type": "Microsoft.Network/networkInterfaces", "name": "nic", "properties": {"x": 1}},
            resource(
                enableAutomaticUpgrade=True,
                suppressFailures=False,
                instanceView={},
                protectedSettingsFromKeyVault={"secretUrl": "https://x"},
                provisioningState="Succeeded",
                state="Disabled",
            ),
        ]
    )
    (only,) = goal.extensions
    assert only.state is RequestedState.DISABLED


def test_empty_template_has_no_extensions() -> None:
    assert parse({"$schema": "x", "resources": []}).extensions == ()
    assert parse([]).extensions == ()


def test_escaped_brackets_are_literals() -> None:
    goal = parse([resource(settings={"cmd": "[[not an expression]", "list": ["[[x]"]})])
    assert goal.extensions[0].public_settings == {"cmd": "[not an expression]", "list": ["[x]"]}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"resources": 3}, ["$.resources: must be an array of resources, not a number"]),
        ([1], ["$[0]: a resource must be an object, not a number"]),
        (
            [resource(name="[concat('vm', '/x')]")],
            ["$[0].name: template expressions are not evaluated"],
        ),
        (
            [resource(typeHandlerVersion="[parameters('v')]")],
            ["$[0].properties.typeHandlerVersion: template expressions are not evaluated"],
        ),
        (
            [resource(settings={"a": ["[variables('x')]"]})],
            ["$[0].properties.settings.a[0]: template expressions are not evaluated"],
        ),
        ([resource(name=5)], ["$[0].name: must be a string, not a number"]),
        ([resource(name="vm/a b")], ["$[0].name: 'a b' is not an extension name"]),
        (
            [{"type": TYPE, "name": "x"}],
            ["$[0].properties: must be an object, not null"],
        ),
        ([resource(bogus=1)], ["$[0].properties.bogus: unknown key"]),
        (
            [{"type": TYPE, "name": "x", "properties": {"type": "T", "typeHandlerVersion": "1.0"}}],
            ["$[0].properties.publisher: required"],
        ),
        (
            {"resources": [{"type": "vm", "resources": [resource(typeHandlerVersion="x")]}]},
            ["$.resources[0].resources[0].properties.typeHandlerVersion: 'x' is not a version"],
        ),
        (
            {"resources": [resource(name="a"), resource(name="A")]},
            ["$.resources[1].name: duplicate extension name 'A' (also $.resources[0])"],
        ),
        (
            [resource(name="a", provisionAfterExtensions=["b"])],
            ["$[0].properties.provisionAfterExtensions[0]: 'b' is not an extension"],
        ),
        (
            [resource(name="a"), resource(name="b", typeHandlerVersion="1.1")],
            ["$[1].properties.typeHandlerVersion: handler Contoso.Examples.Hello is requested"],
        ),
    ],
)
def test_problems(document: Any, expected: list[str]) -> None:
    found = problems(document)
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), found


def test_expression_is_reported_once_and_other_problems_too() -> None:
    found = problems(
        {
            "resources": [
                resource(name="[x]", typeHandlerVersion="[y]", state="on"),
                resource(name="ok", settings=1),
            ]
        }
    )
    assert found == (
        "$.resources[0].name: template expressions are not evaluated",
        "$.resources[0].properties.typeHandlerVersion: template expressions are not evaluated",
        "$.resources[0].properties.state: 'on' is not a state (enabled, disabled, uninstall)",
        "$.resources[1].properties.settings: must be an object or null, not a number",
    )


def test_cycle_is_reported_at_the_resources() -> None:
    found = problems(
        {
            "resources": [
                resource(name="a", provisionAfterExtensions=["b"]),
                resource(name="b", type="Other", provisionAfterExtensions=["a"]),
            ]
        }
    )
    assert found == ("$.resources: dependency cycle a -> b -> a",)


def test_deeply_nested_settings_are_a_goal_state_error() -> None:
    deep: Any = "x"
    for _ in range(700):
        deep = [deep]
    document = json.dumps([resource(settings={"deep": deep})])
    with pytest.raises(GoalStateError) as info:
        parse_goal_state(document)
    assert info.value.problems == ("<goal state>: nested too deeply",)
