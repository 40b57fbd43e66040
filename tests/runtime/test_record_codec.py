"""The handler records' JSON form: what the hand-written codec writes is what the generic
converter it replaced wrote, and it reads back every record unchanged."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

import cattrs
import pytest
from exthandler_sdk.protocol import HandlerState
from hypothesis import given
from hypothesis import strategies as st

from exthandler._model import HandlerName, Version
from exthandler._plan.planner import ExtensionRecord, HandlerRecord, UpgradePhase, UpgradeRecord
from exthandler._state.journal import RecordCodec
from exthandler._values import is_value_class

CODEC = RecordCodec()


def generic() -> cattrs.Converter:
    """The converter records.json and the journal were written with before, when records
    were attrs classes: each record an object of every field, nested values converted the
    same way."""
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_unstructure_hook(Version, str)
    converter.register_structure_hook(Version, lambda value, _: Version.parse(value))
    converter.register_unstructure_hook(HandlerName, str)
    converter.register_structure_hook(HandlerName, lambda value, _: HandlerName.parse(value))

    def unstructure_value(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
        fields = cls.__value_fields__
        return lambda obj: {n: converter.unstructure(getattr(obj, n)) for n in fields}

    def structure_value(cls: type[Any]) -> Callable[[Any, Any], Any]:
        hints = typing.get_type_hints(cls)

        def structure(data: Any, _: Any) -> Any:
            given = {n: converter.structure(data[n], hints[n]) for n in hints if n in data}
            return cls(**given)

        return structure

    converter.register_unstructure_hook_factory(is_value_class, unstructure_value)
    converter.register_structure_hook_factory(is_value_class, structure_value)
    return converter


text = st.text(max_size=8)
versions = st.builds(
    lambda a, b, c: Version.parse(f"{a}.{b}.{c}"), *(st.integers(0, 20) for _ in range(3))
)
names = st.sampled_from(["Contoso.Test", "A.B.C", "Microsoft.Azure.Extensions.CustomScript"])
extensions = st.builds(
    ExtensionRecord,
    name=text,
    sequence_number=st.integers(0, 2**31),
    settings_digest=text,
    enabled=st.booleans(),
    converged=st.none() | text,
)
upgrades = st.builds(
    UpgradeRecord,
    source=versions,
    target=versions,
    phase=st.sampled_from(UpgradePhase),
    disable_exit_codes=st.dictionaries(text, text, max_size=3),
    failed=st.booleans(),
)
records = st.builds(
    HandlerRecord,
    handler=names.map(HandlerName.parse),
    version=st.none() | versions,
    state=st.sampled_from(HandlerState),
    extensions=st.lists(extensions, max_size=3).map(tuple),
    upgrade=st.none() | upgrades,
    failed=st.none() | text,
    failed_package=st.none() | text,
    uninstall_exit_code=text,
    last_errors=st.dictionaries(text, st.tuples(st.integers(-5, 2000), text), max_size=3),
)


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@given(records)
def test_written_as_before_and_read_back_unchanged(record: HandlerRecord) -> None:
    written = CODEC.unstructure(record)
    assert as_json(written) == as_json(generic().unstructure(record))
    assert CODEC.structure(json.loads(as_json(written))) == record
    # What the generic converter wrote reads the same.
    assert CODEC.structure(json.loads(as_json(generic().unstructure(record)))) == record


def test_missing_fields_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    record = CODEC.structure({"handler": "Contoso.Test", "extensions": [{"name": "e"}], "x": 1})
    assert record == HandlerRecord(
        handler=HandlerName.parse("Contoso.Test"), extensions=(ExtensionRecord(name="e"),)
    )


@pytest.mark.parametrize(
    "value",
    [
        [],
        {},
        {"handler": "no dots"},
        {"handler": "Contoso.Test", "version": "x"},
        {"handler": "Contoso.Test", "state": "Bogus"},
        {"handler": "Contoso.Test", "extensions": [{}]},
        {"handler": "Contoso.Test", "extensions": "e"},
        {"handler": "Contoso.Test", "upgrade": {"source": "1.0.0"}},
        {"handler": "Contoso.Test", "last_errors": {"": [1, "a", 2]}},
        {"handler": "Contoso.Test", "last_errors": {"": ["one", "a"]}},
    ],
)
def test_what_is_not_a_record_raises_what_the_journal_catches(value: Any) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        CODEC.structure(value)
