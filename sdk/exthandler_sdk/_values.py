"""`Value`: frozen, keyword-only value classes without a third-party import.

The runtime's goal-state model and instance view are read by `exthandler validate` and
`exthandler status`, and the SDK's protocol records by every handler command: commands
whose whole cost is start-up, when importing attrs alone costs several interpreter starts.
These classes need only what `Value` gives: a keyword-only `__init__` with defaults,
immutability, equality, hashing, a readable repr (that can leave out a secret) and
`replace()`. Type checkers see them as frozen dataclasses (PEP 681).

A value class may derive from another one: its fields come after the base's. One declared
`class Point(Value, kw_only=False)` also takes its fields by position. One that defines
its own `__init__` (to take wider types, say a `str` for a `Path`) keeps it; it converts
what it was given and passes the result on to `self.__value_init__(...)`, the `__init__`
the class would otherwise have had, which sets every field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, dataclass_transform

__all__ = ["FrozenError", "Value", "field", "is_value_class"]

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "MISSING"})()


class FrozenError(AttributeError):
    """An attempt to change a field of a value object."""


class _Field:
    """What `field()` declares: a default (or a factory of one) and whether repr shows it."""

    __slots__ = ("compare", "default", "default_factory", "repr")

    def __init__(
        self,
        default: object,
        default_factory: Callable[[], object] | None,
        repr: bool,
        compare: bool = True,
    ) -> None:
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field with a default, a default made afresh for each value (`default_factory`),
    one left out of the repr (`repr=False`: a secret, a URL with a credential), or one
    left out of equality and the hash (`compare=False`: a cache, a mapping)."""
    if default is not _MISSING and default_factory is not None:
        raise TypeError("field(): a default or a default_factory, not both")
    return _Field(default, default_factory, repr, compare)


def _frozen_setattr(self: object, name: str, _: object) -> None:
    raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")


def _methods(cls: type, fields: dict[str, _Field], kw_only: bool) -> dict[str, Any]:
    """`__init__`, `__eq__`, `__hash__` and `__repr__` for `fields`."""
    names = tuple(name for name, spec in fields.items() if spec.compare)
    scope: dict[str, Any] = {"_MISSING": _MISSING}
    params: list[str] = []
    body: list[str] = []
    for name, spec in fields.items():
        if spec.default_factory is not None:
            scope[f"_f_{name}"] = spec.default_factory
            params.append(f"{name}=_MISSING")
            body.append(f"    if {name} is _MISSING:\n        {name} = _f_{name}()\n")
        elif spec.default is not _MISSING:
            scope[f"_d_{name}"] = spec.default
            params.append(f"{name}=_d_{name}")
        else:
            params.append(name)
        body.append(f"    _d[{name!r}] = {name}\n")
    star = "*, " if params and kw_only else ""
    # Straight into the instance dict: `__setattr__` refuses every change.
    lines = "    _d = self.__dict__\n" + "".join(body)
    values = "".join(f"self.{n}, " for n in names)
    source = (
        f"def __init__(self, {star}{', '.join(params)}):\n{lines}"
        f"def _fields(self):\n    return ({values})\n"
    )
    exec(compile(source, f"<value {cls.__qualname__}>", "exec"), scope)  # noqa: S102
    fields_of: Callable[[Any], tuple[Any, ...]] = scope["_fields"]
    shown = tuple(name for name, spec in fields.items() if spec.repr)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(fields_of(self) == fields_of(other))

    def __hash__(self: Any) -> int:
        return hash((self.__class__.__qualname__, fields_of(self)))

    def __repr__(self: Any) -> str:
        text = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{self.__class__.__qualname__.rpartition('>.')[2]}({text})"

    return {
        "__init__": scope["__init__"],
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__repr__": __repr__,
    }


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
class Value:
    """Base of frozen value classes: each subclass's annotated fields (after those of the
    value class it derives from, if any; one with a default is optional) make its
    keyword-only `__init__`, its equality, hash and repr. A method the class defines
    itself (its own `__eq__`, say) is kept."""

    __slots__ = ()
    __value_specs__: dict[str, _Field] = {}  # noqa: RUF012 (set per class, never changed)
    __value_fields__: tuple[str, ...] = ()

    def __init_subclass__(cls, *, kw_only: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__slots__" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: a value class keeps its fields in its dict")
        bases = [base for base in cls.__bases__ if issubclass(base, Value)]
        if len(cls.__bases__) != 1 or len(bases) != 1:
            raise TypeError(f"{cls.__qualname__}: a value class derives from one value class")
        specs = dict(bases[0].__value_specs__)
        for name in cls.__dict__.get("__annotations__", {}):  # noqa: RUF063 (inspect is dear)
            if name.startswith("__"):
                continue
            given = cls.__dict__.get(name, _MISSING)
            if name in cls.__dict__:
                delattr(cls, name)
            spec = given if isinstance(given, _Field) else _Field(given, None, True)
            if name in specs:
                raise TypeError(f"{cls.__qualname__}.{name}: a field of its base already")
            specs[name] = spec
        required = [n for n, s in specs.items() if s.required]
        cls.__value_specs__ = specs
        cls.__value_fields__ = tuple(specs)
        cls.__value_required__ = frozenset(required)  # type: ignore[attr-defined]
        methods = _methods(cls, specs, kw_only)
        methods["__value_init__"] = methods["__init__"]
        for attribute, method in methods.items():
            if attribute in cls.__dict__:
                continue  # the class's own
            method.__qualname__ = f"{cls.__qualname__}.{attribute}"
            setattr(cls, attribute, method)
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign]

    if TYPE_CHECKING:

        def __value_init__(self, *args: Any, **values: Any) -> None:
            """The `__init__` made from the fields, for a class with an `__init__` of its
            own to finish with."""

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (the value itself is never changed)."""
        kept = {name: getattr(self, name) for name in self.__value_fields__ if name not in changes}
        return self.__class__(**kept, **changes)


def is_value_class(cls: object) -> bool:
    """Whether `cls` is a value class (a subclass of `Value`)."""
    return isinstance(cls, type) and issubclass(cls, Value) and cls is not Value
