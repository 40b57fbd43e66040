"""Names and cross-extension rules of the goal-state model."""

from __future__ import annotations

import pytest

from exthandler import ExtensionGoal, GoalState, GoalStateError, HandlerName, Version
from exthandler._model import PlainProtectedSettings, validate_extension_name


def ext(
    name: str, handler: str = "Contoso.Examples.Hello", version: str = "1.0", **kw: object
) -> ExtensionGoal:
    return ExtensionGoal(
        name=name,
        handler=HandlerName.parse(handler),
        version=Version.parse(version),
        **kw,  # type: ignore[arg-type]
    )


def test_handler_name_splits_at_last_dot() -> None:
    name = HandlerName.parse("Microsoft.Azure.Extensions.CustomScript")
    assert (name.publisher, name.type) == ("Microsoft.Azure.Extensions", "CustomScript")
    assert str(name) == "Microsoft.Azure.Extensions.CustomScript"
    assert name == HandlerName.parse("microsoft.azure.extensions.customscript")
    assert len({name, HandlerName.parse("MICROSOFT.Azure.Extensions.CustomScript")}) == 1
    assert name != "Microsoft.Azure.Extensions.CustomScript"


@pytest.mark.parametrize(
    "text",
    ["CustomScript", ".Type", "Pub.", "Pub..Type", "Pub/../Type.X", "Pub.Ty pe", "a.b/c", ""],
)
def test_bad_handler_names(text: str) -> None:
    with pytest.raises(ValueError, match="is not a handler name"):
        HandlerName.parse(text)


@pytest.mark.parametrize("text", ["", "..", "a..b", "../x", "a/b", ".hidden", "x" * 129, "a b"])
def test_bad_extension_names(text: str) -> None:
    with pytest.raises(ValueError, match="is not an extension name"):
        validate_extension_name(text)


def test_protected_settings_never_show_in_repr() -> None:
    goal = ext("a", protected_settings=PlainProtectedSettings(value={"token": "s3cret"}))
    assert "s3cret" not in repr(goal)
    assert goal.has_settings
    assert not ext("b").has_settings


def test_consistency_lists_every_problem() -> None:
    goal = GoalState(
        id="x",
        extensions=(
            ext("a", depends_on=("c",)),
            ext("A", version="1.1"),
            ext("b", handler="Contoso.Examples.Notes", depends_on=("ghost",)),
            ext("c", handler="Contoso.Examples.Other", depends_on=("a",)),
        ),
    )
    with pytest.raises(GoalStateError) as info:
        goal.check()
    problems = info.value.problems
    assert "extensions[1].name: duplicate extension name 'A' (also extensions[0])" in problems
    assert any(
        p.startswith("extensions[1].version: handler Contoso.Examples.Hello") for p in problems
    )
    assert "extensions[2].dependsOn[0]: 'ghost' is not an extension of this goal state" in problems
    assert any("dependency cycle a -> c -> a" in p for p in problems)


def test_single_config_handler_with_two_extensions_is_refused() -> None:
    goal = GoalState(
        id="x", extensions=(ext("a", multi_config=False), ext("b", multi_config=False))
    )
    with pytest.raises(GoalStateError, match="is not multi-config but has 2 extensions"):
        goal.check()
    multi = GoalState(id="x", extensions=(ext("a", multi_config=True), ext("b", multi_config=True)))
    assert multi.check() is multi
    assert multi.extension("B") == multi.extensions[1]
    assert multi.extension("zz") is None


def test_dependency_on_a_handler_name() -> None:
    goal = GoalState(
        id="x",
        extensions=(
            ext("Contoso.Examples.Hello"),
            ext("n", handler="Contoso.Examples.Notes", depends_on=("contoso.examples.hello",)),
        ),
    )
    assert goal.check() is goal


def test_goal_state_error_always_has_a_problem() -> None:
    assert GoalStateError([]).problems == ("$: invalid goal state",)


def test_names_and_versions_cannot_be_changed_once_made() -> None:
    version, handler = Version.parse("1.2"), HandlerName.parse("Contoso.Ext")
    with pytest.raises(AttributeError, match="cannot be changed"):
        version.text = "9.9"
    with pytest.raises(AttributeError, match="cannot be changed"):
        handler.key = "other.ext"
    with pytest.raises(AttributeError, match="cannot be changed"):
        del handler.type
    assert (str(version), str(handler)) == ("1.2", "Contoso.Ext")
    assert repr(version) == "Version(parts=(1, 2))"
    assert repr(handler) == "HandlerName(publisher='Contoso', type='Ext')"
