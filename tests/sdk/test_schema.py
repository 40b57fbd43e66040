"""The settings JSON Schema: every supported annotation, the fallbacks, and the CLI."""

from __future__ import annotations

import enum
import json
import sys
import typing
from typing import Annotated, Any, Literal, NewType, Optional, Union

import attrs
import pytest
from exthandler_sdk import Handler
from exthandler_sdk._schema import SCHEMA_DIALECT, _Builder, main_schema, settings_schema

UserId = NewType("UserId", int)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Endpoint:
    """Where to connect."""

    host: str
    """The host name."""
    port: int = 443


@attrs.frozen
class Node:
    label: str
    children: list[Node] = attrs.field(factory=list)


@attrs.frozen
class EverySetting:
    """Settings using every annotation the schema understands."""

    text: str
    count: int
    ratio: float
    flag: bool
    names: list[str]
    pair: tuple[int, ...]
    labels: dict[str, int]
    maybe: str | None
    endpoint: Endpoint
    tree: Node
    mode: Literal["fast", "slow"]
    color: Color
    anything: Any
    fixed: tuple[str, int]
    unique: frozenset[str] = frozenset()
    optional_endpoint: Endpoint | None = None
    level: int = attrs.field(default=3, metadata={"description": "How loud."})
    tags: list[str] = attrs.field(factory=list)
    extra: dict[str, str] = attrs.field(factory=dict)
    weird: complex = 0j
    """Not JSON."""
    shade: Color = Color.RED
    sizes: tuple[int, ...] = (1, 2)


@attrs.frozen
class Secrets:
    token: str
    user: UserId
    legacy: Optional[int]  # noqa: UP045
    either: Union[int, str]  # noqa: UP007
    annotated: Annotated[int, "meta"]
    nothing: None
    bare_list: list  # type: ignore[type-arg]
    bare_dict: dict  # type: ignore[type-arg]
    bare_tuple: tuple  # type: ignore[type-arg]
    empty_tuple: tuple[()]


class EveryType(Handler[EverySetting, Secrets]):
    name = "Contoso.Testing.EveryType"
    version = "3.0"


EXPECTED: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Contoso.Testing.EveryType 3.0 settings",
    "type": "object",
    "properties": {
        "publicSettings": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "count": {"type": "integer"},
                "ratio": {"type": "number"},
                "flag": {"type": "boolean"},
                "names": {"type": "array", "items": {"type": "string"}},
                "pair": {"type": "array", "items": {"type": "integer"}},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "endpoint": {"$ref": "#/$defs/Endpoint"},
                "tree": {"$ref": "#/$defs/Node"},
                "mode": {"enum": ["fast", "slow"]},
                "color": {"enum": ["red", "green"]},
                "anything": {},
                "fixed": {
                    "type": "array",
                    "prefixItems": [{"type": "string"}, {"type": "integer"}],
                    "items": False,
                    "minItems": 2,
                    "maxItems": 2,
                },
                "unique": {
                    "type": "array",
                    "items": {"type": "string"},
                    "uniqueItems": True,
                    "default": [],
                },
                "optional_endpoint": {
                    "anyOf": [{"$ref": "#/$defs/Endpoint"}, {"type": "null"}],
                    "default": None,
                },
                "level": {"type": "integer", "description": "How loud.", "default": 3},
                "tags": {"type": "array", "items": {"type": "string"}, "default": []},
                "extra": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "default": {},
                },
                "weird": {
                    "description": "Not JSON.\n\n(unsupported annotation complex: not checked here)"
                },
                "shade": {"enum": ["red", "green"], "default": "red"},
                "sizes": {"type": "array", "items": {"type": "integer"}, "default": [1, 2]},
            },
            "required": [
                "text",
                "count",
                "ratio",
                "flag",
                "names",
                "pair",
                "labels",
                "maybe",
                "endpoint",
                "tree",
                "mode",
                "color",
                "anything",
                "fixed",
            ],
            "description": "Settings using every annotation the schema understands.",
        },
        "protectedSettings": {
            "type": "object",
            "properties": {
                "token": {"type": "string"},
                "user": {"type": "integer"},
                "legacy": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "annotated": {"type": "integer"},
                "nothing": {"type": "null"},
                "bare_list": {"type": "array"},
                "bare_dict": {"type": "object"},
                "bare_tuple": {"type": "array"},
                "empty_tuple": {"type": "array", "maxItems": 0},
            },
            "required": [
                "token",
                "user",
                "legacy",
                "either",
                "annotated",
                "nothing",
                "bare_list",
                "bare_dict",
                "bare_tuple",
                "empty_tuple",
            ],
        },
    },
    "$defs": {
        "Endpoint": {
            "type": "object",
            "properties": {
                "host": {"type": "string", "description": "The host name."},
                "port": {"type": "integer", "default": 443},
            },
            "required": ["host"],
            "description": "Where to connect.",
        },
        "Node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "default": []},
            },
            "required": ["label"],
        },
    },
}


def test_every_supported_annotation() -> None:
    assert settings_schema(EveryType) == EXPECTED


def test_handler_without_settings() -> None:
    class Bare(Handler[None, None]):
        name = "Contoso.Testing.Bare"
        version = "1.0"

    assert settings_schema(Bare) == {
        "$schema": SCHEMA_DIALECT,
        "title": "Contoso.Testing.Bare 1.0 settings",
        "type": "object",
        "properties": {"publicSettings": {"type": "null"}, "protectedSettings": {"type": "null"}},
    }


def test_plain_mapping_settings_and_missing_names() -> None:
    class Loose(Handler[dict[str, Any], None]):
        pass

    schema = settings_schema(Loose)
    assert schema["title"] == "Loose ? settings"
    assert schema["properties"]["publicSettings"] == {
        "type": "object",
        "additionalProperties": {},
    }


@attrs.frozen
class Dangling:
    later: Undefined  # type: ignore[name-defined]  # noqa: F821
    fine: int = 1


def test_unresolvable_annotations_become_anything_with_a_note() -> None:
    class Broken(Handler[Dangling, None]):
        name = "Contoso.Testing.Broken"
        version = "1.0"

    public = settings_schema(Broken)["properties"]["publicSettings"]
    assert public["properties"] == {
        "later": {"description": "unresolved annotation 'Undefined': not checked here"},
        "fine": {"description": "unresolved annotation 'int': not checked here", "default": 1},
    }
    assert public["required"] == ["later"]


class Weight(enum.Enum):
    LIGHT = (1, "kg")


def _factory() -> list[int]:
    return [1]


@attrs.frozen
class Odd:
    weight: Weight = Weight.LIGHT
    made: list[int] = attrs.field(factory=_factory)
    derived: str = attrs.field(
        default=attrs.Factory(lambda self: str(self.weight), takes_self=True)
    )
    nested_default: dict[str, Any] = attrs.field(factory=lambda: {"a": object()})
    mapping_default: dict[str, Any] = {"a": [1, None]}  # noqa: RUF008
    bad_mapping_default: dict[str, Any] = {"a": 1j}  # noqa: RUF008
    bad_list_default: tuple[Any, ...] = (1j,)
    hidden: int = attrs.field(init=False, default=0)


def test_defaults_and_enum_values_that_are_not_simple() -> None:
    class Oddity(Handler[Odd, None]):
        name = "Contoso.Testing.Odd"
        version = "1.0"

    properties = settings_schema(Oddity)["properties"]["publicSettings"]["properties"]
    assert properties == {
        "weight": {"enum": ["(1, 'kg')"], "default": "(1, 'kg')"},
        "made": {"type": "array", "items": {"type": "integer"}},
        "derived": {"type": "string"},
        "nested_default": {"type": "object", "additionalProperties": {}},
        "mapping_default": {
            "type": "object",
            "additionalProperties": {},
            "default": {"a": [1, None]},
        },
        "bad_mapping_default": {"type": "object", "additionalProperties": {}},
        "bad_list_default": {"type": "array", "items": {}},
    }


def test_classes_with_the_same_name_get_distinct_definitions() -> None:
    def make(kind: type[Any]) -> type[Any]:
        @attrs.frozen
        class Item:
            value: Any

        Item.__annotations__["value"] = kind
        return attrs.resolve_types(Item, globalns={}, localns={"kind": kind})

    first, second = make(int), make(str)
    builder = _Builder()
    assert builder.schema(first) == {"$ref": f"#/$defs/{first.__qualname__}"}
    assert builder.schema(second) == {"$ref": f"#/$defs/{second.__module__}.{second.__qualname__}"}
    assert builder.schema(first) == {"$ref": f"#/$defs/{first.__qualname__}"}
    assert set(builder.defs) == {first.__qualname__, f"{second.__module__}.{second.__qualname__}"}


def test_classes_without_source_have_no_attribute_docs() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "import attrs\n@attrs.frozen\nclass Generated:\n    x: int\n    'doc'\n",
        namespace,
    )
    builder = _Builder()
    assert builder.top_level(namespace["Generated"]) == {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
    }


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (set[int], {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
        (typing.Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (
            typing.Mapping[str, bool],
            {"type": "object", "additionalProperties": {"type": "boolean"}},
        ),
        (Literal[1, None], {"enum": [1, None]}),
        (bytes, {"description": "unsupported annotation bytes: not checked here"}),
        (
            list[bytes],
            {
                "type": "array",
                "items": {"description": "unsupported annotation bytes: not checked here"},
            },
        ),
        (
            typing.Callable[[], int],
            {"description": "unsupported annotation typing.Callable[[], int]: not checked here"},
        ),
    ],
)
def test_single_annotations(annotation: Any, expected: dict[str, Any]) -> None:
    assert _Builder().schema(annotation) == expected


def test_cli_prints_sorted_indented_schema(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != ""])
    assert main_schema([f"{__name__}:EveryType"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == EXPECTED
    assert out == json.dumps(EXPECTED, indent=2, sort_keys=True) + "\n"
    assert sys.path[0] == ""


def test_cli_rejects_what_is_not_a_handler(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_schema([f"{__name__}:Secrets"]) == 2
    assert "is not a subclass of exthandler_sdk.Handler" in capsys.readouterr().err
    assert main_schema(["no_such_module_here:X"]) == 2
    assert "cannot import module 'no_such_module_here'" in capsys.readouterr().err
