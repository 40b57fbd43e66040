"""vmSettings JSON (the HostGAPlugin goal state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exthandler._errors import GoalStateError
from exthandler._goalstate import load_goal_state, parse_goal_state
from exthandler._model import (
    EncryptedProtectedSettings,
    ExtensionGoal,
    GoalState,
    GoalStateFormat,
    RequestedState,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "goalstates"
THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"
E = "$.extensionGoalStates[0]"


def handler(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Contoso.Examples.Hello", "version": "1.0.1"}
    base.update(fields)
    return base


def parse(*handlers: Any, **top: Any) -> GoalState:
    return parse_goal_state(json.dumps({"extensionGoalStates": list(handlers), **top}))


def only(**fields: Any) -> ExtensionGoal:
    (goal,) = parse(handler(**fields)).extensions
    return goal


def problems(document: Any) -> tuple[str, ...]:
    with pytest.raises(GoalStateError) as info:
        parse_goal_state(json.dumps(document))
    return info.value.problems


def test_example() -> None:
    goal = load_goal_state(EXAMPLES / "vmsettings.json")
    assert goal.format is GoalStateFormat.VM_SETTINGS
    single, shopping, todo = goal.extensions
    assert (single.name, single.sequence_number, single.multi_config) == (
        "Contoso.Examples.Hello",
        4,
        None,
    )
    assert single.public_settings == {"message": "Hello from FastTrack"}
    assert (shopping.name, shopping.sequence_number, shopping.multi_config) == ("shopping", 1, True)
    assert todo.state is RequestedState.UNINSTALL
    assert todo.depends_on == ("Contoso.Examples.Hello",)
    assert todo.dependency_level == 1


def test_keys_are_case_insensitive_and_unknown_keys_ignored() -> None:
    goal = parse_goal_state(
        json.dumps(
            {
                "ExtensionGoalStates": [
                    {
                        "NAME": "Contoso.Examples.Hello",
                        "Version": "1.0.1",
                        "STATE": "Disabled",
                        "location": "https://x",
                        "Settings": [{"PublicSettings": {"a": 1}, "SEQNO": "7"}],
                    }
                ],
                "activityId": "x",
            }
        )
    )
    (hello,) = goal.extensions
    assert hello.state is RequestedState.DISABLED
    assert (hello.public_settings, hello.sequence_number) == ({"a": 1}, 7)


def test_defaults() -> None:
    goal = only()
    assert goal.state is RequestedState.ENABLED
    assert (goal.use_exact_version, goal.auto_upgrade_minor) == (True, False)
    assert not goal.has_settings
    assert goal.sequence_number is None


def test_flags() -> None:
    goal = only(useExactVersion=False, autoUpgrade="true")
    assert (goal.use_exact_version, goal.auto_upgrade_minor) == (False, True)


def test_sequence_number_falls_back_to_settings_seq_no() -> None:
    assert only(settingsSeqNo=3).sequence_number == 3
    assert only(settingsSeqNo=3, settings=[{"publicSettings": "{}"}]).sequence_number == 3
    assert only(settingsSeqNo=3, settings=[{"seqNo": 5}]).sequence_number == 5


def test_encrypted_settings() -> None:
    goal = only(
        settings=[
            {
                "publicSettings": None,
                "protectedSettings": "QUJD",
                "protectedSettingsCertThumbprint": THUMBPRINT.lower(),
            }
        ]
    )
    assert goal.protected_settings == EncryptedProtectedSettings(data="QUJD", thumbprint=THUMBPRINT)


def test_empty_document_shapes() -> None:
    assert parse().extensions == ()
    assert parse_goal_state('{"extensionGoalStates": null}').extensions == ()
    assert only(settings=None).settings_error is None
    assert only(settings=[{"publicSettings": " ", "protectedSettings": ""}]).has_settings is False


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"settings": [{"publicSettings": "{"}]},
            f"{E}.settings[0].publicSettings: not valid JSON",
        ),
        ({"settings": [{"publicSettings": "[1]"}]}, f"{E}.settings[0].publicSettings: must be an"),
        ({"settings": [{"publicSettings": 3}]}, f"{E}.settings[0].publicSettings: must be an obj"),
        (
            {"settings": [{"protectedSettings": "QUJD"}]},
            f"{E}.settings[0].protectedSettingsCertThumbprint: required with protectedSettings",
        ),
        (
            {"settings": [{"protectedSettings": 5}]},
            f"{E}.settings[0].protectedSettings: must be a base64 string, not a number",
        ),
        ({"settings": [{"seqNo": True}]}, f"{E}.settings[0].seqNo: True is not a non-negative"),
        ({"settings": [1]}, f"{E}.settings[0]: must be an object, not a number"),
        ({"settings": [{}, {}]}, f"{E}.settings: has 2 entries, expected one"),
        ({"settings": {"a": 1}}, f"{E}.settings: must be an array, not an object"),
        ({"settingsSeqNo": "x"}, f"{E}.settingsSeqNo: 'x' is not a non-negative integer"),
    ],
)
def test_invalid_settings_are_reported_not_dropped(fields: dict[str, Any], error: str) -> None:
    goal = only(**fields)
    assert goal.settings_error is not None
    assert goal.settings_error.startswith(error), goal.settings_error
    assert not goal.has_settings


def test_multi_config() -> None:
    goals = parse(
        handler(
            state="enabled",
            isMultiConfig="True",
            settingsSeqNo=9,
            settings=[
                {"extensionName": "a", "publicSettings": '{"x": 1}', "seqNo": 2},
                {"extensionName": "b", "extensionState": "disabled"},
                {"extensionName": "c", "publicSettings": "nope"},
            ],
            dependsOn=[
                {
                    "dependencyLevel": 2,
                    "extensionName": "b",
                    "dependsOnExtension": [{"extension": "a"}],
                }
            ],
        )
    ).extensions
    a, b, c = goals
    assert (a.name, a.sequence_number, a.public_settings, a.multi_config) == (
        "a",
        2,
        {"x": 1},
        True,
    )
    assert (b.state, b.sequence_number, b.depends_on, b.dependency_level) == (
        RequestedState.DISABLED,
        9,
        ("a",),
        2,
    )
    assert (a.depends_on, a.dependency_level) == ((), 0)
    assert c.settings_error is not None
    assert c.settings_error.startswith(f"{E}.settings[2].publicSettings: not valid JSON")


def test_multi_config_bad_settings_seq_no_marks_every_extension() -> None:
    goals = parse(
        handler(isMultiConfig=True, settingsSeqNo=-1, settings=[{"extensionName": "a"}])
    ).extensions
    assert goals[0].settings_error == f"{E}.settingsSeqNo: -1 is not a non-negative integer"


def test_uninstalling_the_handler_uninstalls_every_extension() -> None:
    (goal,) = parse(
        handler(
            state="uninstall",
            isMultiConfig=True,
            settings=[{"extensionName": "a", "extensionState": "enabled"}],
        )
    ).extensions
    assert goal.state is RequestedState.UNINSTALL


def test_single_dependency_object_is_accepted() -> None:
    notes = {"name": "Contoso.Examples.Notes", "version": "2.0.0"}
    hello, _ = parse(
        handler(dependsOn=[{"dependsOnExtension": {"handler": "Contoso.Examples.Notes"}}]), notes
    ).extensions
    assert hello.depends_on == ("Contoso.Examples.Notes",)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"extensionGoalStates": {}}, ["$.extensionGoalStates: must be an array, not an object"]),
        ({"extensionGoalStates": [1]}, [f"{E}: must be an object, not a number"]),
        ({"extensionGoalStates": [{}]}, [f"{E}.name: required", f"{E}.version: required"]),
        ({"extensionGoalStates": [handler(name="x")]}, [f"{E}.name: 'x' is not a handler name"]),
        ({"extensionGoalStates": [handler(name=1)]}, [f"{E}.name: must be a handler name string"]),
        ({"extensionGoalStates": [handler(version="1")]}, [f"{E}.version: '1' is not a version"]),
        ({"extensionGoalStates": [handler(state="x")]}, [f"{E}.state: 'x' is not a state"]),
        ({"extensionGoalStates": [handler(dependsOn=1)]}, [f"{E}.dependsOn: must be an array"]),
        ({"extensionGoalStates": [handler(dependsOn=[1])]}, [f"{E}.dependsOn[0]: must be an obj"]),
        (
            {"extensionGoalStates": [handler(dependsOn=[{"dependencyLevel": "a"}])]},
            [f"{E}.dependsOn[0].dependencyLevel: 'a' is not a non-negative integer"],
        ),
        (
            {"extensionGoalStates": [handler(dependsOn=[{"dependsOnExtension": [{}]}])]},
            [f"{E}.dependsOn[0].dependsOnExtension[0].handler: required"],
        ),
        (
            {"extensionGoalStates": [handler(isMultiConfig=True, settings=[1])]},
            [f"{E}.settings[0]: must be an object, not a number"],
        ),
        (
            {"extensionGoalStates": [handler(isMultiConfig=True, settings={})]},
            [f"{E}.settings: must be an array, not an object"],
        ),
        (
            {"extensionGoalStates": [handler(isMultiConfig=True, settings=[{}])]},
            [f"{E}.settings[0].extensionName: required"],
        ),
        (
            {
                "extensionGoalStates": [
                    handler(
                        isMultiConfig=True, settings=[{"extensionName": "a", "extensionState": "?"}]
                    )
                ]
            },
            [f"{E}.settings[0].extensionState: '?' is not a state"],
        ),
        (
            {"extensionGoalStates": [handler(), handler(version="1.0.2")]},
            [
                "$.extensionGoalStates[1].name: duplicate extension name",
                "$.extensionGoalStates[1].version: handler Contoso.Examples.Hello is requested",
            ],
        ),
        (
            {
                "extensionGoalStates": [
                    handler(
                        isMultiConfig=True,
                        settings=[{"extensionName": "a"}, {"extensionName": "A"}],
                    )
                ]
            },
            [f"{E}.settings[1].name: duplicate extension name 'A' (also {E}.settings[0])"],
        ),
    ],
)
def test_structural_problems(document: Any, expected: list[str]) -> None:
    found = problems(document)
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), found
