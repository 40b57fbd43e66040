"""`Value`: the instance view's frozen value classes behave as value objects should."""

from __future__ import annotations

from pathlib import Path

import pytest

from exthandler._values import FrozenError, Value, field


class Point(Value):
    x: int
    label: str | None = None


def test_keyword_only_with_defaults() -> None:
    assert Point(x=1).label is None
    assert Point(x=1, label="a").label == "a"
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(x=1, y=2)  # type: ignore[call-arg]


def test_equality_and_hash_follow_the_fields() -> None:
    assert Point(x=1) == Point(x=1, label=None)
    assert Point(x=1) != Point(x=2)
    assert len({Point(x=1), Point(x=1), Point(x=2)}) == 2


def test_values_of_other_classes_are_never_equal() -> None:
    class Other(Value):
        x: int
        label: str | None = None

    assert Point(x=1) != Other(x=1)  # type: ignore[comparison-overlap]


def test_frozen() -> None:
    point = Point(x=1)
    with pytest.raises(FrozenError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(FrozenError):
        del point.x
    assert point.x == 1


def test_replace_makes_a_changed_copy() -> None:
    point = Point(x=1, label="a")
    moved = point.replace(x=5)
    assert (moved.x, moved.label, point.x) == (5, "a", 1)
    with pytest.raises(TypeError):
        point.replace(y=1)


def test_repr() -> None:
    assert repr(Point(x=1, label="a")) == "Point(x=1, label='a')"


def test_a_derived_value_class_has_its_base_fields_first() -> None:
    class Labelled(Point):
        colour: str = "red"

    value = Labelled(x=1, colour="blue")
    assert (value.x, value.label, value.colour) == (1, None, "blue")
    assert repr(value) == "Labelled(x=1, label=None, colour='blue')"
    assert value != Point(x=1)
    assert value.replace(x=2) == Labelled(x=2, colour="blue")
    with pytest.raises(TypeError):
        Labelled(colour="blue")  # type: ignore[call-arg]


def test_only_one_value_base() -> None:
    with pytest.raises(TypeError, match="derives from one value class"):

        class Both(Point, int):
            pass

    with pytest.raises(TypeError, match="a field of its base"):

        class Again(Point):
            x: int


class Secret(Value):
    user: str
    password: str = field(repr=False)
    tags: list[str] = field(default_factory=list)


def test_a_field_can_be_hidden_from_repr_and_have_a_fresh_default() -> None:
    one, two = Secret(user="u", password="hunter2"), Secret(user="u", password="x")
    assert "hunter2" not in repr(one)
    assert repr(one) == "Secret(user='u', tags=[])"
    assert one.tags == []
    assert one.tags is not two.tags
    with pytest.raises(TypeError):
        Secret(user="u")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="not both"):
        field(default=1, default_factory=list)


def test_a_class_keeps_its_own_equality() -> None:
    class Loose(Value):
        name: str

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Loose) and self.name.lower() == other.name.lower()

        def __hash__(self) -> int:
            return hash(self.name.lower())

    assert Loose(name="A") == Loose(name="a")
    assert len({Loose(name="A"), Loose(name="a")}) == 1


def test_a_value_class_keeps_its_fields_in_its_dict() -> None:
    with pytest.raises(TypeError, match="keeps its fields in its dict"):

        class Slotted(Value):
            __slots__ = ("x",)
            x: int


class Segment(Value, kw_only=False):
    start: int
    end: int = 0


def test_a_positional_value_class_takes_its_fields_in_order() -> None:
    assert Segment(1, 2) == Segment(start=1, end=2)
    assert Segment(3).end == 0
    with pytest.raises(TypeError):
        Segment(1, 2, 3)  # type: ignore[call-arg]


class Cached(Value):
    key: str
    cache: dict[str, int] = field(default_factory=dict, compare=False)


def test_a_field_left_out_of_comparison_is_not_hashed_or_compared() -> None:
    first, second = Cached(key="a", cache={"x": 1}), Cached(key="a")
    assert first == second
    assert hash(first) == hash(second)  # a dict in the hash would raise
    assert Cached(key="a") != Cached(key="b")
    assert "cache={'x': 1}" in repr(first)


class Located(Value):
    where: Path
    depth: int = 0

    def __init__(self, where: str | Path, *, depth: int = 0) -> None:
        if depth < 0:
            raise ValueError(f"depth: must be >= 0, not {depth}")
        self.__value_init__(where=Path(where), depth=depth)


def test_a_class_with_its_own_init_converts_then_sets_every_field() -> None:
    located = Located("/tmp/a", depth=2)
    assert located.where == Path("/tmp/a")
    assert located == Located(Path("/tmp/a"), depth=2)
    assert located.replace(depth=3) == Located("/tmp/a", depth=3)
    with pytest.raises(ValueError, match="depth: must be >= 0"):
        Located("x", depth=-1)
    with pytest.raises(FrozenError):
        located.depth = 4  # type: ignore[misc]


class Shaped(Value):
    """The same shape as `Reshaped` (two fields, the second with a factory)."""

    name: str
    items: list[int] = field(default_factory=list)


class Reshaped(Value):
    title: str
    extra: dict[str, int] = field(default_factory=lambda: {"made": 1})


def test_classes_of_one_shape_keep_their_own_names_defaults_and_errors() -> None:
    assert Shaped(name="a").items == []
    assert Reshaped(title="b").extra == {"made": 1}
    given = [7]
    assert Shaped(name="a", items=given).items is given  # a given value beats the factory
    assert Shaped(name="a").items is not Shaped(name="a").items
    with pytest.raises(TypeError, match=r"Shaped.__init__\(\) missing 1 required keyword-only"):
        Shaped()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'name'"):
        Shaped()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'title'"):
        Reshaped()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'name'"):
        Reshaped(name="x")  # type: ignore[call-arg]
    assert Shaped.__init__.__qualname__ == "Shaped.__init__"


def test_a_positional_class_cannot_put_a_required_field_after_a_default() -> None:
    with pytest.raises(TypeError, match=r"Backwards.end: a field without a default follows"):

        class Backwards(Value, kw_only=False):
            start: int = 0
            end: int  # type: ignore[misc]


def test_a_field_may_be_named_like_the_init_s_own_names() -> None:
    class Odd(Value, kw_only=False):
        _p1: int
        _fill: int = 2
        _MISSING: str = "m"

    odd = Odd(5)
    assert (odd._p1, odd._fill, odd._MISSING) == (5, 2, "m")
    assert Odd(1, 3, "x") == Odd(_p1=1, _fill=3, _MISSING="x")


def test_the_ready_made_templates_are_what_the_generator_renders() -> None:
    from exthandler_sdk import _inits, _values

    text = Path(_inits.__file__).read_text(encoding="utf-8")
    assert text == _values.render_templates(), (
        "sdk/exthandler_sdk/_inits.py is stale: regenerate it with"
        " python -c 'from exthandler_sdk._values import render_templates;"
        ' print(render_templates(), end="")\' > sdk/exthandler_sdk/_inits.py'
    )


def test_a_class_of_more_fields_than_the_ready_made_templates_still_works() -> None:
    names = [f"f{i}" for i in range(30)]
    Wide = type("Wide", (Value,), {"__annotations__": dict.fromkeys(names, "int"), "f29": 0})
    wide = Wide(**{name: i for i, name in enumerate(names[:29])})
    assert [getattr(wide, name) for name in names] == [*range(29), 0]
    with pytest.raises(TypeError, match="'f3'"):
        Wide(**{name: 1 for name in names if name != "f3"})
