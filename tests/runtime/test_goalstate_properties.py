"""Property tests: no input makes the parsers fail with anything but GoalStateError."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exthandler._errors import GoalStateError
from exthandler._goalstate import parse_goal_state
from exthandler._model import GoalState, RequestedState

FAST = settings(max_examples=150, deadline=None)
SHAPED = settings(max_examples=80, deadline=None)

KEYS = [
    "id", "extensions", "name", "publisher", "type", "typeHandlerVersion",
    "autoUpgradeMinorVersion", "useExactVersion", "state", "settings", "protectedSettings",
    "protectedSettingsCertThumbprint", "forceUpdateTag", "provisionAfterExtensions",
    "resources", "properties", "$schema", "extensionGoalStates", "version", "isMultiConfig",
    "settingsSeqNo", "seqNo", "extensionName", "extensionState", "publicSettings", "dependsOn",
    "dependencyLevel", "dependsOnExtension", "handler",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["1.0", "Contoso.Examples.Hello", "enabled", "UNINSTALL", "[x]", "QUJD"])
)
keys = st.sampled_from(KEYS) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
small_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(keys, inner, max_size=2),
    max_leaves=4,
)


def outcome(data: bytes | str) -> GoalState | None:
    """Parse; a GoalStateError is a fine answer, anything else fails the test."""
    try:
        goal = parse_goal_state(data)
    except GoalStateError as exc:
        problems = exc.problems
    else:
        assert isinstance(goal, GoalState)
        return goal
    assert problems
    assert all(isinstance(p, str) and ": " in p for p in problems), problems
    return None


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    outcome(data)


@FAST
@given(st.text(max_size=60))
def test_arbitrary_text(text: str) -> None:
    outcome(text)
    outcome("<" + text)


@FAST
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    outcome(json.dumps(value))


@FAST
@given(json_values, st.sampled_from(["extensions", "resources", "extensionGoalStates"]))
def test_arbitrary_json_under_each_format_key(value: Any, key: str) -> None:
    outcome(json.dumps({key: value}))
    outcome(json.dumps({key: [value]}))


names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,6}", fullmatch=True)
versions = st.lists(st.integers(0, 30), min_size=2, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)
states = st.sampled_from([s.value for s in RequestedState])


def fuzzed(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything."""
    return st.one_of(valid, valid, small_json)


native_extensions = st.fixed_dictionaries(
    {
        "name": fuzzed(names),
        "publisher": fuzzed(st.just("Contoso.Examples")),
        "type": fuzzed(names),
        "typeHandlerVersion": fuzzed(versions),
    },
    optional={
        "state": fuzzed(states),
        "autoUpgradeMinorVersion": fuzzed(st.booleans()),
        "useExactVersion": fuzzed(st.booleans()),
        "settings": fuzzed(st.dictionaries(st.text(max_size=4), scalars, max_size=3)),
        "protectedSettings": fuzzed(st.just("QUJD")),
        "protectedSettingsCertThumbprint": fuzzed(st.just("ab" * 20)),
        "forceUpdateTag": fuzzed(st.text(max_size=5)),
        "provisionAfterExtensions": fuzzed(st.lists(names, max_size=2)),
        "bogus": small_json,
    },
)


@SHAPED
@given(st.lists(native_extensions, max_size=3), st.none() | fuzzed(st.text(min_size=1)))
def test_almost_native_documents(extensions: list[Any], id_: Any) -> None:
    document: dict[str, Any] = {"extensions": extensions}
    if id_ is not None:
        document["id"] = id_
    outcome(json.dumps(document))
    arm = [
        {"type": "extensions", "name": e.get("name"), "properties": {**e, "name": None}}
        for e in extensions
    ]
    for resource in arm:
        resource["properties"].pop("name")
    outcome(json.dumps({"resources": arm}))


vm_settings_handlers = st.fixed_dictionaries(
    {"name": fuzzed(st.just("Contoso.Examples.Hello")), "version": fuzzed(versions)},
    optional={
        "state": fuzzed(states),
        "isMultiConfig": fuzzed(st.booleans()),
        "settingsSeqNo": fuzzed(st.integers(0, 5)),
        "settings": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "publicSettings": fuzzed(st.just('{"a": 1}')),
                    "protectedSettings": fuzzed(st.just("QUJD")),
                    "protectedSettingsCertThumbprint": fuzzed(st.just("AB" * 20)),
                    "seqNo": fuzzed(st.integers(0, 5)),
                    "extensionName": fuzzed(names),
                    "extensionState": fuzzed(states),
                },
            ),
            max_size=3,
        ),
        "dependsOn": fuzzed(
            st.just([{"dependencyLevel": 1, "dependsOnExtension": [{"handler": "A.B"}]}])
        ),
    },
)


@SHAPED
@given(st.lists(vm_settings_handlers, max_size=3))
def test_almost_vm_settings_documents(handlers: list[Any]) -> None:
    outcome(json.dumps({"extensionGoalStates": handlers}))


XML_TOKENS = [
    "<Extensions>", "</Extensions>", '<Extensions goalStateIncarnation="2">', "<Plugins>",
    "</Plugins>", "<PluginSettings>", "</PluginSettings>", "</Plugin>", "<Plugins/>",
    '<Plugin name="Contoso.Examples.Hello" version="1.0.0">',
    '<Plugin name="Contoso.Examples.Hello" version="1.0.0"/>',
    '<Plugin name="contoso.examples.hello" version="1.0" state="disabled" isJson="false">',
    '<Plugin name="A.B" version="x">', '<RuntimeSettings seqNo="0">', "</RuntimeSettings>",
    '<ExtensionRuntimeSettings seqNo="1" name="e1">', "</ExtensionRuntimeSettings>",
    '<DependsOn dependencyLevel="1">', "</DependsOn>", '<DependsOnExtension handler="A.B"/>',
    '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"a":1}}}]}', "{", "}", "&amp;",
    "&bogus;", "<!DOCTYPE x>", '<?xml version="1.0" encoding="utf-8"?>', "<![CDATA[x]]>",
    "<!-- c -->", " ", '"', "'", "=",
]  # fmt: skip

xmlish = st.lists(
    st.sampled_from(XML_TOKENS) | st.text(alphabet=string.printable, max_size=5), max_size=25
).map("".join)


@FAST
@given(xmlish)
def test_xmlish_text(text: str) -> None:
    outcome(text)
    outcome(text.encode("utf-8"))


plain_settings = st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5) | st.booleans(), max_size=3
)
native_documents = st.lists(
    st.tuples(names, names, versions, states, plain_settings),
    max_size=5,
    unique_by=lambda t: t[0].lower(),
)


@FAST
@given(native_documents)
def test_valid_native_documents_round_trip(specs: list[tuple[str, str, str, str, Any]]) -> None:
    # One version per handler: the type is derived from the extension name.
    extensions = [
        {
            "name": name,
            "publisher": "Contoso.Examples",
            "type": f"T{name}",
            "typeHandlerVersion": version,
            "state": state.upper(),
            "settings": settings_,
        }
        for name, _, version, state, settings_ in specs
    ]
    goal = parse_goal_state(json.dumps({"extensions": extensions}))
    assert [
        (e.name, str(e.version), e.state.value, e.public_settings) for e in goal.extensions
    ] == [(name, version, state, settings_) for name, _, version, state, settings_ in specs]
    assert [str(e.handler) for e in goal.extensions] == [
        f"Contoso.Examples.T{name}" for name, *_ in specs
    ]
