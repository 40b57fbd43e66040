"""`Value`: frozen, keyword-only value classes without a third-party import.

The instance view's classes are read by `exthandler status`, a command whose whole cost
is start-up: importing attrs alone costs several interpreter starts. These classes need
only what `Value` gives: a keyword-only `__init__` with defaults, immutability, equality,
hashing, a readable repr and `replace()`. Type checkers see them as frozen dataclasses
(PEP 681).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, dataclass_transform

__all__ = ["FrozenError", "Value"]


class FrozenError(AttributeError):
    """An attempt to change a field of a value object."""


def _frozen_setattr(self: object, name: str, _: object) -> None:
    raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")


def _methods(cls: type, names: tuple[str, ...], defaults: dict[str, object]) -> dict[str, Any]:
    """`__init__`, `__eq__`, `__hash__`, `__repr__` and `replace` for `names`."""
    params = ", ".join(f"{n}=_d_{n}" if n in defaults else n for n in names)
    body = "".join(f"    _set(self, {n!r}, {n})\n" for n in names) or "    pass\n"
    fields = "".join(f"self.{n}, " for n in names)
    source = f"def __init__(self, *, {params}):\n{body}def _fields(self):\n    return ({fields})\n"
    scope: dict[str, Any] = {"_set": object.__setattr__}
    scope.update({f"_d_{n}": default for n, default in defaults.items()})
    exec(compile(source, f"<value {cls.__qualname__}>", "exec"), scope)  # noqa: S102
    fields_of: Callable[[Any], tuple[Any, ...]] = scope["_fields"]

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(fields_of(self) == fields_of(other))

    def __hash__(self: Any) -> int:
        return hash((self.__class__.__qualname__, fields_of(self)))

    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({shown})"

    return {
        "__init__": scope["__init__"],
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__repr__": __repr__,
        "__value_fields__": names,
        "__setattr__": _frozen_setattr,
        "__delattr__": _frozen_delattr,
    }


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Value:
    """Base of frozen value classes: each subclass's annotated fields (in order; one with
    a class-level default is optional) make its keyword-only `__init__`, its equality,
    hash and repr. A value class is not subclassed further."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__bases__ != (Value,):
            raise TypeError(f"{cls.__qualname__}: a value class derives from Value alone")
        names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 (inspect is dear)
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        for name in defaults:
            delattr(cls, name)
        for attribute, method in _methods(cls, names, defaults).items():
            if callable(method):
                method.__qualname__ = f"{cls.__qualname__}.{attribute}"
            setattr(cls, attribute, method)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (the value itself is never changed)."""
        names: tuple[str, ...] = getattr(self, "__value_fields__")  # noqa: B009 (set per class)
        kept = {name: getattr(self, name) for name in names if name not in changes}
        return self.__class__(**kept, **changes)
