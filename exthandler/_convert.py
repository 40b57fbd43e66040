"""The project's converter from JSON to value classes, and its `path: reason` lines.

Documents read from JSON are structured into private value classes (`exthandler._values`,
or attrs classes) with one converter built
by `make_converter()` (never a module-level global, so nobody registers hooks into a
converter someone else relies on). The converter is strict: JSON scalars are not coerced
(`"1"` is not an int, `1` is not a string), unknown keys are errors, and every problem of a
document is collected before anything is reported. It is the project's own, small and
built for exactly this: `exthandler validate` is mostly start-up, and a general-purpose
converter library costs more to import than the parse itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from ._values import is_value_class

__all__ = [
    "Converter",
    "Invalid",
    "error_items",
    "error_lines",
    "json_kind",
    "key_suffix",
    "make_converter",
]


class Invalid(ValueError):
    """Raised by structure hooks: problems found in a value, relative to where it sits.

    Each problem is `(suffix, reason)`; the suffix (`""`, `".key"`, `"[0]"`) is appended to
    the value's path, so a hook can point below the value it was given.
    """

    def __init__(self, reason: str, *more: tuple[str, str]) -> None:
        self.problems: tuple[tuple[str, str], ...] = (("", reason), *more)
        super().__init__("; ".join(f"{s or '.'}: {r}" for s, r in self.problems))

    @classmethod
    def many(cls, problems: Iterable[tuple[str, str]]) -> Invalid:
        first, *rest = problems
        error = cls(first[1], *rest)
        error.problems = (first, *rest)
        return error


def json_kind(value: object) -> str:
    """The JSON name of a value's type, for messages ("string", "object", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def key_suffix(key: object) -> str:
    """The path suffix for a key: `.name` when it reads well, else `[<repr>]`."""
    if isinstance(key, str) and key.replace("$", "_").isidentifier():
        return f".{key}"
    return f"[{key!r}]"


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {json_kind(value)}")
    return value


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {json_kind(value)}")
    return value


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer, not {json_kind(value)}")
    return value


def _strict_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, not {json_kind(value)}")
    return float(value)


Hook = Callable[[Any, Any], Any]
_Fn = Callable[[Any], Any]


class Converter:
    """Structures JSON values into value classes, strictly, collecting every problem.

    Hooks are looked up by the exact type (a class, a `NewType`, a union alias); `X | None`
    accepts null; `list[X]` needs a JSON array; a value class (a `Value`, or an attrs
    class) needs a JSON object with its required keys and no others. Problems are raised
    together as one `Invalid` whose suffixes point at where each sits, in document order:
    a class's fields in order, then its unknown keys (sorted). Each type is turned into
    one structuring function on first use, so that a document of 10,000 extensions pays
    for the type analysis once.
    """

    def __init__(self) -> None:
        self._hooks: dict[Any, Hook] = {
            str: _strict_str,
            bool: _strict_bool,
            int: _strict_int,
            float: _strict_float,
        }
        self._compiled: dict[Any, _Fn] = {}
        self._classes: dict[type, _Fn] = {}

    def register_structure_hook(self, type_: Any, hook: Hook) -> None:
        """Structure values of `type_` with `hook(value, type_)` (it raises `Invalid`)."""
        self._hooks[type_] = hook
        self._compiled.clear()
        self._classes.clear()

    def structure(self, value: Any, type_: Any) -> Any:
        """`value` as a `type_`, or `Invalid` listing every problem."""
        return self._function(type_)(value)

    def structure_attrs(self, value: Any, cls: type[Any]) -> Any:
        """A value class from a JSON object, ignoring any hook registered for `cls`."""
        function = self._classes.get(cls)
        if function is None:
            function = self._classes[cls] = self._compile_class(cls)
        return function(value)

    def _function(self, type_: Any) -> _Fn:
        function = self._compiled.get(type_)
        if function is None:
            function = self._compiled[type_] = self._compile(type_)
        return function

    def _compile(self, type_: Any) -> _Fn:
        hook = self._hooks.get(type_)
        if hook is not None:
            return lambda value: hook(value, type_)
        if type_ is Any:
            return lambda value: value
        origin = get_origin(type_)
        if origin is list:
            return self._compile_list(get_args(type_)[0])
        if origin in (Union, UnionType):
            members = get_args(type_)
            if len(members) == 2 and type(None) in members:
                inner_type = next(m for m in members if m is not type(None))
                inner_hook = self._hooks.get(inner_type)
                if inner_hook is not None:  # one call fewer per value: the common case
                    return lambda value: None if value is None else inner_hook(value, inner_type)
                inner = self._function(inner_type)
                return lambda value: None if value is None else inner(value)
        if is_value_class(type_) or _is_attrs_class(type_):
            # Looked up at the first value: a class may contain itself.
            return lambda value: self.structure_attrs(value, type_)
        raise TypeError(f"no way to structure {type_!r}")  # a programming error

    def _compile_class(self, cls: type[Any]) -> _Fn:
        fields = _fields(cls)
        known = frozenset(f[0] for f in fields)
        required = frozenset(f[0] for f in fields if f[3])
        # Each field's function, made at the class's first value (after every hook).
        table: dict[str, _Fn] = {}

        def ordered(value: Mapping[Any, Any]) -> Any:
            """Every problem, in document order: the fields in order, then unknown keys."""
            problems: list[tuple[str, str]] = []
            kwargs: dict[str, Any] = {}
            for name, where, _, is_required in fields:
                if name not in value:
                    if is_required:
                        problems.append((where, "required"))
                    continue
                try:
                    kwargs[name] = table[name](value[name])
                except Exception as exc:  # a hook's bug is still reported by path
                    problems.extend((where + suffix, reason) for suffix, reason in _problems(exc))
            if not known.issuperset(value):
                extra = sorted((key for key in value if key not in known), key=str)
                problems.extend((key_suffix(key), "unknown key") for key in extra)
            if problems:
                raise Invalid.many(problems)
            return cls(**kwargs)

        def structure_class(value: Any) -> Any:
            if value.__class__ is not dict and not isinstance(value, Mapping):
                raise Invalid(f"must be an object, not {json_kind(value)}")
            if not table:
                table.update((name, self._function(type_)) for name, _, type_, _ in fields)
            # The common case, a valid object, looks at the keys it has; at the first
            # problem the object is read again in order, to report all of them.
            kwargs: dict[str, Any] = {}
            try:
                for key, item in value.items():
                    kwargs[key] = table[key](item)
            except Exception:
                return ordered(value)
            if not required.issubset(kwargs):
                return ordered(value)
            return cls(**kwargs)

        return structure_class

    def _compile_list(self, item: Any) -> _Fn:
        function = self._function(item)

        def structure_list(value: Any) -> list[Any]:
            if not isinstance(value, list | tuple):
                raise Invalid(f"must be an array, not {json_kind(value)}")
            with contextlib.suppress(Exception):  # else read again, reporting each by index
                return [function(entry) for entry in value]
            problems: list[tuple[str, str]] = []
            result: list[Any] = []
            for index, entry in enumerate(value):
                try:
                    result.append(function(entry))
                except Exception as exc:  # a hook's bug is still reported by path
                    problems.extend((f"[{index}]{s}", reason) for s, reason in _problems(exc))
            if problems:
                raise Invalid.many(problems)
            return result

        return structure_list


def _is_attrs_class(type_: Any) -> bool:
    # Without importing attrs: its classes carry their fields in `__attrs_attrs__`.
    return isinstance(type_, type) and "__attrs_attrs__" in type_.__dict__


def _fields(cls: type[Any]) -> tuple[tuple[str, str, Any, bool], ...]:
    """(name, path suffix, type, required) of each field of a value class, in order."""
    if is_value_class(cls):
        hints = get_type_hints(cls)
        required = cls.__value_required__
        return tuple((n, key_suffix(n), hints[n], n in required) for n in cls.__value_fields__)
    import attrs

    attrs.resolve_types(cls)
    return tuple(
        (f.name, key_suffix(f.name), f.type, f.default is attrs.NOTHING) for f in attrs.fields(cls)
    )


def _problems(exc: Exception) -> tuple[tuple[str, str], ...]:
    if isinstance(exc, Invalid):
        return exc.problems
    if isinstance(exc, TypeError) and str(exc).startswith("no way to structure"):
        raise exc  # a type the converter was never taught: a programming error
    return (("", f"unknown error ({exc})"),)


def make_converter() -> Converter:
    """A fresh strict converter: no coercion of scalars, unknown keys forbidden."""
    return Converter()


def error_items(exc: BaseException, *, path: str = "$") -> list[tuple[str, str]]:
    """Every problem in an `Invalid` as `(path, reason)`, in document order."""
    if not isinstance(exc, Invalid):
        return [(path, str(exc) or type(exc).__name__)]
    return [(path + suffix, reason) for suffix, reason in exc.problems]


def error_lines(exc: BaseException, *, path: str = "$") -> list[str]:
    """Every problem in an `Invalid` as a `path: reason` line."""
    return [f"{where}: {reason}" for where, reason in error_items(exc, path=path)]
