"""`Value`: the instance view's frozen value classes behave as value objects should."""

from __future__ import annotations

import pytest

from exthandler._values import FrozenError, Value


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


def test_a_value_class_is_not_derived_further() -> None:
    with pytest.raises(TypeError, match="derives from Value alone"):

        class Derived(Point):
            extra: int
