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
