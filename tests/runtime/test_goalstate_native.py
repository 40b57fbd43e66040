"""The native JSON goal state, detection, loading, and the converter's error lines."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from exthandler._convert import Invalid, error_lines, json_kind, make_converter
from exthandler._errors import GoalStateError
from exthandler._goalstate import load_goal_state, parse_goal_state
from exthandler._model import (
    EncryptedProtectedSettings,
    GoalStateFormat,
    HandlerName,
    PlainProtectedSettings,
    RequestedState,
    Version,
)
from exthandler._values import Value

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "goalstates"
THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def ext(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "hello",
        "publisher": "Contoso.Examples",
        "type": "Hello",
        "typeHandlerVersion": "1.0.0",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def problems(document: Any) -> tuple[str, ...]:
    data = document if isinstance(document, str | bytes) else json.dumps(document)
    with pytest.raises(GoalStateError) as info:
        parse_goal_state(data)
    return info.value.problems


def test_example_parses() -> None:
    goal = load_goal_state(EXAMPLES / "native.json")
    assert goal.id == "example-1"
    assert goal.format is GoalStateFormat.NATIVE
    hello, notes = goal.extensions
    assert hello.handler == HandlerName("Contoso.Examples", "Hello")
    assert hello.version == Version.parse("1.0")
    assert hello.auto_upgrade_minor is True
    assert hello.protected_settings == PlainProtectedSettings(value={"token": "not-a-real-secret"})
    assert hello.force_update_tag == "2026-01-15"
    assert notes.use_exact_version is True
    assert notes.depends_on == ("hello",)
    assert notes.multi_config is None
    assert notes.sequence_number is None


def test_defaults() -> None:
    goal = parse_goal_state(json.dumps({"extensions": [ext()]}))
    (only,) = goal.extensions
    assert only.state is RequestedState.ENABLED
    assert (only.auto_upgrade_minor, only.use_exact_version) == (False, False)
    assert not only.has_settings
    assert only.depends_on == ()
    assert goal.id.startswith("sha256:")
    assert len(goal.id) == len("sha256:") + 16


def test_id_is_a_hash_of_the_content() -> None:
    one = parse_goal_state(json.dumps({"extensions": []}))
    again = parse_goal_state(json.dumps({"extensions": []}).encode())
    other = parse_goal_state(json.dumps({"extensions": [ext()]}))
    assert one.id == again.id != other.id
    assert one.extensions == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Disabled", RequestedState.DISABLED),
        ("UNINSTALL", RequestedState.UNINSTALL),
        ("enabled", RequestedState.ENABLED),
        (None, RequestedState.ENABLED),
    ],
)
def test_state_is_case_insensitive(value: str | None, expected: RequestedState) -> None:
    goal = parse_goal_state(json.dumps({"extensions": [ext(state=value)]}))
    assert goal.extensions[0].state is expected


@pytest.mark.parametrize(
    ("value", "expected"), [("tag", "tag"), (3, "3"), (1.5, "1.5"), ("", None), (None, None)]
)
def test_force_update_tag(value: object, expected: str | None) -> None:
    goal = parse_goal_state(json.dumps({"extensions": [ext(forceUpdateTag=value)]}))
    assert goal.extensions[0].force_update_tag == expected


def test_null_optional_fields_mean_their_defaults() -> None:
    nulls = dict.fromkeys(
        [
            "autoUpgradeMinorVersion",
            "useExactVersion",
            "state",
            "settings",
            "protectedSettings",
            "protectedSettingsCertThumbprint",
            "forceUpdateTag",
            "provisionAfterExtensions",
        ]
    )
    goal = parse_goal_state(json.dumps({"id": None, "extensions": [ext(**nulls)]}))
    assert goal.extensions == parse_goal_state(json.dumps({"extensions": [ext()]})).extensions


def test_encrypted_protected_settings() -> None:
    document = {
        "extensions": [
            ext(protectedSettings="QUJD\nREVG", protectedSettingsCertThumbprint=THUMBPRINT.lower())
        ]
    }
    protected = parse_goal_state(json.dumps(document)).extensions[0].protected_settings
    assert protected == EncryptedProtectedSettings(data="QUJDREVG", thumbprint=THUMBPRINT)


BAD = "must be an object or null, not an array"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"extensions": "x"}, "$.extensions: must be an array, not a string"),
        ({"extensions": [], "id": 3}, "$.id: must be a non-empty string, not 3"),
        ({"extensions": [], "id": " "}, "$.id: must be a non-empty string, not ' '"),
        ({"extensions": [], "other": 1}, "$.other: unknown key"),
        ({"extensions": [7]}, "$.extensions[0]: must be an object, not a number"),
        ({"extensions": [ext(name=...)]}, "$.extensions[0].name: required"),
        ({"extensions": [ext(name=5)]}, "$.extensions[0].name: must be an extension name"),
        ({"extensions": [ext(name="../x")]}, "$.extensions[0].name: '../x' is not an extension"),
        ({"extensions": [ext(publisher=...)]}, "$.extensions[0].publisher: required"),
        ({"extensions": [ext(publisher=1)]}, "$.extensions[0].publisher: must be a string"),
        ({"extensions": [ext(publisher="a b")]}, "$.extensions[0].publisher: 'a b.Hello' is not"),
        ({"extensions": [ext(type="H i")]}, "$.extensions[0].type: 'Contoso.Examples.H i' is"),
        ({"extensions": [ext(type="A.B")]}, "$.extensions[0].type: 'A.B' is not a handler type"),
        ({"extensions": [ext(typeHandlerVersion=...)]}, "$.extensions[0].typeHandlerVersion: req"),
        ({"extensions": [ext(typeHandlerVersion=2)]}, "$.extensions[0].typeHandlerVersion: must"),
        ({"extensions": [ext(typeHandlerVersion="1")]}, "$.extensions[0].typeHandlerVersion: '1'"),
        (
            {"extensions": [ext(typeHandlerVersion="1" * 70)]},
            "$.extensions[0].typeHandlerVersion: '1111111111",
        ),
        ({"extensions": [ext(state="on")]}, "$.extensions[0].state: 'on' is not a state"),
        ({"extensions": [ext(state=1)]}, "$.extensions[0].state: 1 is not a state"),
        ({"extensions": [ext(autoUpgradeMinorVersion="true")]}, "$.extensions[0].autoUpgradeMi"),
        ({"extensions": [ext(useExactVersion=1)]}, "$.extensions[0].useExactVersion: must be tr"),
        ({"extensions": [ext(settings=[])]}, f"$.extensions[0].settings: {BAD}"),
        ({"extensions": [ext(protectedSettings=1)]}, "$.extensions[0].protectedSettings: must be"),
        ({"extensions": [ext(protectedSettings="%%")]}, "$.extensions[0].protectedSettings: is n"),
        ({"extensions": [ext(protectedSettings=" ")]}, "$.extensions[0].protectedSettings: is em"),
        (
            {"extensions": [ext(protectedSettings="QUJD")]},
            "$.extensions[0].protectedSettingsCertThumbprint: required when",
        ),
        (
            {"extensions": [ext(protectedSettingsCertThumbprint=THUMBPRINT)]},
            "$.extensions[0].protectedSettingsCertThumbprint: only allowed",
        ),
        (
            {"extensions": [ext(protectedSettings="QUJD", protectedSettingsCertThumbprint="AB")]},
            "$.extensions[0].protectedSettingsCertThumbprint: 'AB' is not a certificate",
        ),
        ({"extensions": [ext(forceUpdateTag=True)]}, "$.extensions[0].forceUpdateTag: must be"),
        ({"extensions": [ext(provisionAfterExtensions="a")]}, "$.extensions[0].provisionAfterE"),
        (
            {"extensions": [ext(provisionAfterExtensions=["a b"])]},
            "$.extensions[0].provisionAfterExtensions[0]: 'a b' is not",
        ),
        ({"extensions": [ext(Name="x")]}, "$.extensions[0].Name: unknown key"),
        ({"extensions": [ext(**{"a b": 1})]}, "$.extensions[0]['a b']: unknown key"),
    ],
)
def test_each_problem_has_its_path(document: dict[str, Any], expected: str) -> None:
    found = problems(document)
    assert any(p.startswith(expected) for p in found), found


def test_consistency_problems_are_reported_with_native_paths() -> None:
    document = {
        "extensions": [
            ext(name="a", provisionAfterExtensions=["b", "ghost"]),
            ext(name="A", typeHandlerVersion="1.1"),
            ext(name="b", type="Other", provisionAfterExtensions=["a"]),
        ]
    }
    assert problems(document) == (
        "$.extensions[1].name: duplicate extension name 'A' (also $.extensions[0])",
        "$.extensions[1].typeHandlerVersion: handler Contoso.Examples.Hello is requested at 1.1"
        " here and at 1.0.0 in $.extensions[0]; one handler runs at one version",
        "$.extensions[0].provisionAfterExtensions[1]: 'ghost' is not an extension of this goal"
        " state",
        "$.extensions: dependency cycle a -> b -> a",
    )


def test_every_problem_is_listed_at_once() -> None:
    found = problems((EXAMPLES / "invalid-native.json").read_bytes())
    assert found == (
        "$.extensions[0].typeHandlerVersion: '1.0.0-beta' is not a version (2 to 4"
        " dot-separated integers, e.g. '2.1.3')",
        "$.extensions[0].state: 'running' is not a state (enabled, disabled, uninstall)",
        "$.extensions[0].settings: must be an object or null, not a string",
        "$.extensions[1].colour: unknown key",
        "$.extensions[1].protectedSettingsCertThumbprint: required when protectedSettings is"
        " encrypted (a base64 string)",
        "$.comment: unknown key",
    )


def test_error_message_joins_the_problems() -> None:
    with pytest.raises(GoalStateError) as info:
        parse_goal_state(json.dumps({"extensions": [ext(state="x", settings=1)]}))
    assert str(info.value) == "\n".join(info.value.problems)
    assert len(info.value.problems) == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "<goal state>: not valid JSON"),
        (b"{", "<goal state>: not valid JSON"),
        (b"\xff\xfe\xff", "<goal state>: not valid text"),
        (b"[NaN]", "<goal state>: not valid JSON (NaN is not a JSON number)"),
        (b"{}", "<goal state>: not a goal state"),
        (b'"extensions"', "<goal state>: not a goal state"),
        (b"[" * 100_000, "<goal state>: nested too deeply"),
        (b'{"extensions": [' + b"[" * 100_000 + b"]", "<goal state>: nested too deeply"),
    ],
)
def test_whole_document_problems(data: bytes, expected: str) -> None:
    found = problems(data)
    assert len(found) == 1
    assert found[0].startswith(expected), found


def test_deep_but_valid_json_settings_are_kept() -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"x": deep}
    goal = parse_goal_state(json.dumps({"extensions": [ext(settings=deep)]}))
    assert goal.extensions[0].public_settings == deep


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_text_encodings(encoding: str) -> None:
    text = json.dumps({"extensions": [ext(settings={"m": "é"})]})
    goal = parse_goal_state(text.encode(encoding))
    assert goal.extensions[0].public_settings == {"m": "é"}


def test_str_input_and_source_name() -> None:
    assert parse_goal_state(' \n{"extensions": []}').extensions == ()
    with pytest.raises(GoalStateError) as info:
        parse_goal_state("nope", source="goal.json")
    assert info.value.problems[0].startswith("goal.json: not valid JSON")


def test_load_goal_state_from_path_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "goal.json"
    path.write_text(json.dumps({"id": "x", "extensions": [ext()]}))
    assert load_goal_state(path).id == "x"
    assert load_goal_state(str(path)).id == "x"
    assert load_goal_state(path.read_bytes()).id == "x"
    path.write_text("{")
    with pytest.raises(GoalStateError) as info:
        load_goal_state(path)
    assert info.value.problems[0].startswith(f"{path}: not valid JSON")


def test_load_goal_state_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(GoalStateError) as info:
        load_goal_state(missing)
    assert info.value.problems == (f"{missing}: cannot read: No such file or directory",)
    with pytest.raises(GoalStateError) as info:
        load_goal_state(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path}: cannot read: ")


def test_input_is_not_modified() -> None:
    document = {"extensions": [ext(settings={"a": [1, 2]})]}
    before = copy.deepcopy(document)
    parse_goal_state(json.dumps(document))
    assert document == before


# The converter on its own.


@attrs.frozen(kw_only=True)
class Inner:
    text: str
    count: int = 0
    ratio: float = 0.0
    flag: bool = False


@attrs.frozen(kw_only=True)
class Outer:
    items: list[Inner]


class ValueInner(Value):
    text: str
    count: int = 0
    ratio: float = 0.0
    flag: bool = False


class ValueOuter(Value):
    items: list[ValueInner]


@pytest.mark.parametrize("outer", [Outer, ValueOuter])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"items": [{"text": 1}]}, ["$.items[0].text: must be a string, not a number"]),
        (
            {"items": [{"text": "a", "count": True}]},
            ["$.items[0].count: must be an integer, not a boolean"],
        ),
        (
            {"items": [{"text": "a", "count": 1.5}]},
            ["$.items[0].count: must be an integer, not a number"],
        ),
        (
            {"items": [{"text": "a", "ratio": "1"}]},
            ["$.items[0].ratio: must be a number, not a string"],
        ),
        (
            {"items": [{"text": "a", "flag": None}]},
            ["$.items[0].flag: must be true or false, not null"],
        ),
        ({"items": {}}, ["$.items: must be an array, not an object"]),
        (
            {"items": [{}], "x": 1, "1": 2},
            ["$.items[0].text: required", "$['1']: unknown key", "$.x: unknown key"],
        ),
        ([], ["$: must be an object, not an array"]),
        (
            # Every problem, in document order, even after valid entries.
            {"z": 0, "items": [{"text": "a"}, {"flag": 1, "text": 2, "y": 0}, 5]},
            [
                "$.items[1].text: must be a string, not a number",
                "$.items[1].flag: must be true or false, not a number",
                "$.items[1].y: unknown key",
                "$.items[2]: must be an object, not a number",
                "$.z: unknown key",
            ],
        ),
    ],
)
def test_converter_is_strict(value: object, expected: list[str], outer: type[Any]) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the converter's errors
        make_converter().structure(value, outer)
    assert error_lines(info.value) == expected


def test_converter_accepts_valid_values() -> None:
    value = {"items": [{"text": "a", "count": 2, "ratio": 1, "flag": True}]}
    assert make_converter().structure(value, Outer) == Outer(
        items=[Inner(text="a", count=2, ratio=1.0, flag=True)]
    )
    assert make_converter().structure(value, ValueOuter) == ValueOuter(
        items=[ValueInner(text="a", count=2, ratio=1.0, flag=True)]
    )


def test_error_lines_of_other_exceptions() -> None:
    assert error_lines(KeyError(), path="$.x") == ["$.x: KeyError"]
    assert error_lines(ValueError("boom")) == ["$: boom"]
    assert error_lines(Invalid.many([(".a", "one"), ("[2]", "two")])) == ["$.a: one", "$[2]: two"]


def test_unexpected_hook_errors_are_still_reported() -> None:
    converter = make_converter()

    def explode(value: object, _: object) -> str:
        raise RuntimeError("bad hook")

    converter.register_structure_hook(str, explode)
    with pytest.raises(Exception) as info:  # noqa: PT011
        converter.structure({"items": [{"text": "a"}]}, Outer)
    assert error_lines(info.value) == ["$.items[0].text: unknown error (bad hook)"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "a boolean"),
        (1, "a number"),
        ("", "a string"),
        ([], "an array"),
        ({}, "an object"),
        (object(), "object"),
    ],
)
def test_json_kind(value: object, kind: str) -> None:
    assert json_kind(value) == kind
