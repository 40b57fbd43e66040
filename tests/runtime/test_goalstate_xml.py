"""ExtensionsConfig XML (the WireServer goal state)."""

from __future__ import annotations

from pathlib import Path

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
HELLO = '<Plugin name="Contoso.Examples.Hello" version="1.0.0"{attrs}/>'
SETTINGS = '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"m":"hi"}}}]}'


def config(plugins: str, settings: str = "", root: str = "") -> str:
    return (
        f"<Extensions{root}><Plugins>{plugins}</Plugins>"
        f"<PluginSettings>{settings}</PluginSettings></Extensions>"
    )


def hello(attrs: str = "") -> str:
    return HELLO.format(attrs=attrs)


def hello_settings(body: str, version: str = "1.0.0") -> str:
    return f'<Plugin name="contoso.examples.HELLO" version="{version}">{body}</Plugin>'


def parse(text: str | bytes) -> GoalState:
    return parse_goal_state(text)


def only(text: str) -> ExtensionGoal:
    (goal,) = parse(text).extensions
    return goal


def problems(text: str | bytes) -> tuple[str, ...]:
    with pytest.raises(GoalStateError) as info:
        parse(text)
    return info.value.problems


def test_example() -> None:
    goal = load_goal_state(EXAMPLES / "extensionsconfig.xml")
    assert goal.format is GoalStateFormat.EXTENSIONS_CONFIG
    assert goal.incarnation == 7
    assert goal.id.startswith("sha256:")
    single, shopping, todo = goal.extensions
    assert single.name == "Contoso.Examples.Hello"
    assert (single.sequence_number, single.multi_config) == (3, None)
    assert single.public_settings == {"message": "Hello from the wire"}
    assert single.use_exact_version is True
    assert (shopping.name, shopping.multi_config, shopping.sequence_number) == ("shopping", True, 0)
    assert todo.state is RequestedState.DISABLED
    assert shopping.depends_on == ("Contoso.Examples.Hello",)
    assert shopping.dependency_level == 1


def test_plugin_attributes() -> None:
    goal = only(
        config(hello(' state="Disabled" autoUpgrade="TRUE" useExactVersion="false" location="x"'))
    )
    assert goal.state is RequestedState.DISABLED
    assert (goal.auto_upgrade_minor, goal.use_exact_version) == (True, False)
    assert not goal.has_settings
    assert goal.sequence_number is None
    assert goal.settings_error is None


def test_defaults_for_wire_formats() -> None:
    goal = only(config(hello()))
    assert goal.state is RequestedState.ENABLED
    assert (goal.auto_upgrade_minor, goal.use_exact_version) == (False, True)


def test_single_config_settings_match_case_insensitively() -> None:
    goal = only(
        config(hello(), hello_settings(f'<RuntimeSettings seqNo="5">{SETTINGS}</RuntimeSettings>'))
    )
    assert goal.sequence_number == 5
    assert goal.public_settings == {"m": "hi"}


def test_encrypted_settings() -> None:
    body = (
        '{"runtimeSettings":[{"handlerSettings":{"protectedSettings":"QUJD",'
        f'"protectedSettingsCertThumbprint":"{THUMBPRINT.lower()}","publicSettings":null}}}}]}}'
    )
    goal = only(
        config(hello(), hello_settings(f'<RuntimeSettings seqNo="0">{body}</RuntimeSettings>'))
    )
    assert goal.protected_settings == EncryptedProtectedSettings(data="QUJD", thumbprint=THUMBPRINT)
    assert goal.public_settings is None


@pytest.mark.parametrize(
    ("body", "seq", "public"),
    [
        ('<RuntimeSettings seqNo="1"> </RuntimeSettings>', 1, None),
        ('<RuntimeSettings seqNo="1">{"runtimeSettings":[]}</RuntimeSettings>', 1, None),
        (
            '<RuntimeSettings seqNo="2">{"runtimeSettings":[{"handlerSettings":null}]}'
            "</RuntimeSettings>",
            2,
            None,
        ),
        ("<Unknown/>", None, None),
    ],
)
def test_settings_without_content(body: str, seq: int | None, public: object) -> None:
    goal = only(config(hello(), hello_settings(body)))
    assert (goal.sequence_number, goal.public_settings, goal.settings_error) == (seq, public, None)


S = "Extensions/PluginSettings/Plugin[1]"
R = f"{S}/RuntimeSettings"


@pytest.mark.parametrize(
    ("plugin", "body", "error"),
    [
        (hello(), "<RuntimeSettings>{}</RuntimeSettings>", f"{R}@seqNo: required"),
        (hello(), '<RuntimeSettings seqNo="x">{}</RuntimeSettings>', f"{R}@seqNo: 'x' is not a"),
        (hello(), '<RuntimeSettings seqNo="-1">{}</RuntimeSettings>', f"{R}@seqNo: '-1' is not"),
        (hello(), '<RuntimeSettings seqNo="1">{</RuntimeSettings>', f"{R}: not valid JSON"),
        (hello(), '<RuntimeSettings seqNo="1">[]</RuntimeSettings>', f"{R}: the settings must be"),
        (hello(), '<RuntimeSettings seqNo="1">{}</RuntimeSettings>', f"{R}: runtimeSettings: must"),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{},{}]}</RuntimeSettings>',
            f"{R}: runtimeSettings: has 2 entries, expected one",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[1]}</RuntimeSettings>',
            f"{R}: runtimeSettings[0]: must be an object",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{"handlerSettings":1}]}'
            "</RuntimeSettings>",
            f"{R}: runtimeSettings[0].handlerSettings: must be an object, not a number",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{"handlerSettings":'
            '{"publicSettings":[1]}}]}</RuntimeSettings>',
            f"{R}: runtimeSettings[0].handlerSettings.publicSettings: must be an object",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{"handlerSettings":'
            '{"protectedSettings":"QUJD"}}]}</RuntimeSettings>',
            f"{R}: runtimeSettings[0].handlerSettings.protectedSettingsCertThumbprint: required",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{"handlerSettings":'
            '{"protectedSettings":"!","protectedSettingsCertThumbprint":"x"}}]}'
            "</RuntimeSettings>",
            f"{R}: runtimeSettings[0].handlerSettings.protectedSettings: is not valid base64",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1">{"runtimeSettings":[{"handlerSettings":'
            '{"protectedSettings":"QUJD","protectedSettingsCertThumbprint":"x"}}]}'
            "</RuntimeSettings>",
            f"{R}: runtimeSettings[0].handlerSettings.protectedSettingsCertThumbprint: 'x' is",
        ),
        (
            hello(' isJson="false"'),
            '<RuntimeSettings seqNo="1">a=b</RuntimeSettings>',
            f"{R}: only JSON settings are supported",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1"/><RuntimeSettings seqNo="2"/>',
            f"{R}: appears 2 times",
        ),
        (
            hello(),
            '<RuntimeSettings seqNo="1"/><ExtensionRuntimeSettings name="a" seqNo="1"/>',
            f"{S}: has both RuntimeSettings and ExtensionRuntimeSettings",
        ),
    ],
)
def test_invalid_settings_are_reported_not_dropped(plugin: str, body: str, error: str) -> None:
    goal = only(config(plugin, hello_settings(body)))
    assert goal.settings_error is not None
    assert goal.settings_error.startswith(error), goal.settings_error
    assert not goal.has_settings
    assert goal.name == "Contoso.Examples.Hello"


def test_settings_for_another_version() -> None:
    goal = only(config(hello(), hello_settings("", version="0.9")))
    assert goal.settings_error == f"{S}: settings are for version 0.9, not 1.0.0"


def test_settings_with_a_malformed_version_do_not_match() -> None:
    goal = only(config(hello(), hello_settings("", version="one")))
    assert goal.settings_error == f"{S}: settings are for version one, not 1.0.0"


def test_two_settings_entries_for_one_plugin() -> None:
    goal = only(config(hello(), hello_settings("") + hello_settings("", version="1.0")))
    assert goal.settings_error == f"{S}: 2 PluginSettings entries for this plugin"


def test_multi_config() -> None:
    body = (
        f'<ExtensionRuntimeSettings seqNo="1" name="first">{SETTINGS}</ExtensionRuntimeSettings>'
        '<ExtensionRuntimeSettings seqNo="x" name="second" state="disabled">'
        "</ExtensionRuntimeSettings>"
        '<DependsOn dependencyLevel="2" name="second">'
        '<DependsOnExtension extension="first" handler="Contoso.Examples.Hello"/></DependsOn>'
    )
    first, second = parse(config(hello(' state="disabled"'), hello_settings(body))).extensions
    assert (first.name, first.state, first.sequence_number) == ("first", RequestedState.DISABLED, 1)
    assert first.public_settings == {"m": "hi"}
    assert (first.depends_on, first.dependency_level) == ((), 0)
    assert second.multi_config is True
    assert second.settings_error is not None
    assert second.settings_error.startswith(f"{S}/ExtensionRuntimeSettings[2]@seqNo:")
    assert (second.depends_on, second.dependency_level) == (("first",), 2)


def test_uninstalling_the_plugin_uninstalls_every_extension() -> None:
    body = '<ExtensionRuntimeSettings seqNo="1" name="a" state="enabled"/>'
    goal = only(config(hello(' state="uninstall"'), hello_settings(body)))
    assert goal.state is RequestedState.UNINSTALL


def test_dependencies_between_plugins() -> None:
    notes = '<Plugin name="Contoso.Examples.Notes" version="2.0.0"/>'
    body = (
        '<DependsOn dependencyLevel="1"><DependsOnExtension handler="Contoso.Examples.Notes"/>'
        '<DependsOnExtension handler="Contoso.Examples.Notes"/></DependsOn>'
    )
    hello_goal, _ = parse(config(hello() + notes, hello_settings(body))).extensions
    assert hello_goal.depends_on == ("Contoso.Examples.Notes",)
    assert hello_goal.dependency_level == 1


def test_namespaces_and_unknown_content_are_ignored() -> None:
    text = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Extensions xmlns="urn:x" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' goalStateIncarnation="3"><GuestAgentExtension/><Plugins>'
        + hello(' foo="bar"')
        + "<Other/></Plugins><StatusUploadBlob>x</StatusUploadBlob></Extensions>"
    )
    goal = parse(text.encode())
    assert goal.incarnation == 3
    assert goal.extensions[0].name == "Contoso.Examples.Hello"


def test_bom_and_whitespace_before_xml() -> None:
    assert parse(b"\xef\xbb\xbf \n" + config(hello()).encode()).extensions
    assert parse("\ufeff  " + config(hello())).extensions
    assert parse(config(hello()).encode("utf-16")).extensions


def test_empty_plugins_means_no_extensions() -> None:
    assert parse("<Extensions><Plugins/></Extensions>").extensions == ()


P = "Extensions/Plugins/Plugin[1]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<", ["<goal state>: not valid XML"]),
        ("<a></b>", ["<goal state>: not valid XML"]),
        ("<Goal/>", ["<goal state>: the root element is 'Goal', not Extensions"]),
        (
            '<!DOCTYPE x [<!ENTITY e "boom">]><Extensions/>',
            ["<goal state>: refused XML"],
        ),
        ("<!DOCTYPE Extensions><Extensions/>", ["<goal state>: refused XML"]),
        ("<Extensions/>", ["Extensions/Plugins: required"]),
        ("<Extensions><Plugins/><Plugins/></Extensions>", ["Extensions/Plugins: appears 2 times"]),
        (
            config(hello(), root=' goalStateIncarnation="x"'),
            ["Extensions@goalStateIncarnation: 'x'"],
        ),
        (config('<Plugin version="1.0"/>'), [f"{P}@name: required"]),
        (config('<Plugin name="x" version="1.0"/>'), [f"{P}@name: 'x' is not a handler name"]),
        (config('<Plugin name="A.B"/>'), [f"{P}@version: required"]),
        (
            config(f'<Plugin name="A.{"B" * 300}" version="1.0"/>'),
            [f"{P}@name: 'A.BBBB"],
        ),
        (config('<Plugin name="A.B" version="v1"/>'), [f"{P}@version: 'v1' is not a version"]),
        (config(hello(' state="paused"')), [f"{P}@state: 'paused' is not a state"]),
        (
            config(hello(), "<Plugin/>"),
            ["Extensions/PluginSettings/Plugin[1]@name: required"],
        ),
        (
            config(hello(), hello_settings('<DependsOn dependencyLevel="z"/>')),
            [f"{S}/DependsOn[1]@dependencyLevel: 'z' is not a non-negative integer"],
        ),
        (
            config(hello(), hello_settings("<DependsOn><DependsOnExtension/></DependsOn>")),
            [f"{S}/DependsOn[1]/DependsOnExtension[1]@handler: required"],
        ),
        (
            config(hello(), hello_settings('<ExtensionRuntimeSettings seqNo="1"/>')),
            [f"{S}/ExtensionRuntimeSettings[1]@name: required"],
        ),
        (
            config(hello(), hello_settings('<ExtensionRuntimeSettings name="a" state="x"/>')),
            [f"{S}/ExtensionRuntimeSettings[1]@state: 'x' is not a state"],
        ),
        (
            config(hello() + hello(' state="disabled"')),
            [
                "Extensions/Plugins/Plugin[2]@name: duplicate extension name"
                " 'Contoso.Examples.Hello' (also Extensions/Plugins/Plugin[1])"
            ],
        ),
        (
            config(
                hello(),
                hello_settings("<DependsOn><DependsOnExtension handler='A.B'/></DependsOn>"),
            ),
            [f"{P}.dependsOn[0]: 'A.B' is not an extension of this goal state"],
        ),
    ],
)
def test_structural_problems(text: str, expected: list[str]) -> None:
    found = problems(text)
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert line.startswith(prefix), found


def test_several_structural_problems_at_once() -> None:
    text = config(
        '<Plugin name="A.B" version="x" state="q"/><Plugin name="1" version="1.0"/>' + hello(),
    )
    assert problems(text) == (
        "Extensions/Plugins/Plugin[1]@version: 'x' is not a version (2 to 4 dot-separated"
        " integers, e.g. '2.1.3')",
        "Extensions/Plugins/Plugin[1]@state: 'q' is not a state (enabled, disabled, uninstall)",
        "Extensions/Plugins/Plugin[2]@name: '1' is not a handler name 'Publisher.Type' (letters,"
        " digits, '_', '-' in dot-separated parts)",
    )
