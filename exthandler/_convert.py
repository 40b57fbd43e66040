"""The project's cattrs converter and the translation of its errors into `path: reason` lines.

Documents read from JSON are structured into private attrs classes with one converter built
by `make_converter()` (never a module-level global, so nobody registers hooks into a
converter someone else relies on). The converter is strict: JSON scalars are not coerced
(`"1"` is not an int, `1` is not a string), unknown keys are errors, and every problem of a
document is collected before anything is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.cols import is_mutable_sequence, list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

__all__ = ["Invalid", "error_items", "error_lines", "json_kind", "key_suffix", "make_converter"]

# Separates the encoded reason from the path that cattrs.transform_error appends. Reasons
# never contain a raw NUL: user text only reaches them through repr().
_END = "\x00"
_ITEM = "\x1f"
_FIELD = "\x1e"


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


def _list_factory(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], list[Any]]:
    """Lists must be JSON arrays: a string or an object is not silently iterated."""
    inner = list_structure_factory(type_, converter)

    def structure(value: Any, cl: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise Invalid(f"must be an array, not {json_kind(value)}")
        result: list[Any] = inner(value, cl)
        return result

    return structure


def _attrs_factory(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """attrs classes come from JSON objects; anything else is one clear problem."""
    inner = make_dict_structure_fn(type_, converter)

    def structure(value: Any, cl: Any) -> Any:
        if not isinstance(value, Mapping):
            raise Invalid(f"must be an object, not {json_kind(value)}")
        return inner(value, cl)

    return structure


def make_converter() -> cattrs.Converter:
    """A fresh strict converter: no coercion of scalars, unknown keys forbidden."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook_factory(is_mutable_sequence, _list_factory)
    converter.register_structure_hook_factory(attrs.has, _attrs_factory)
    return converter


def _format(exc: BaseException, type_: type | None) -> str:
    """Encode an exception's problems for `error_items` to decode."""
    if isinstance(exc, Invalid):
        problems = exc.problems
    elif isinstance(exc, ForbiddenExtraKeysError):
        problems = tuple((key_suffix(k), "unknown key") for k in sorted(exc.extra_fields, key=str))
    elif isinstance(exc, KeyError):
        problems = (("", "required"),)
    else:
        problems = (("", cattrs.v.format_exception(exc, type_)),)
    return _ITEM.join(f"{s}{_FIELD}{r}" for s, r in problems) + _END


def error_items(exc: BaseException, *, path: str = "$") -> list[tuple[str, str]]:
    """Every problem in a cattrs error as `(path, reason)`, in document order."""
    if not isinstance(exc, ClassValidationError | IterableValidationError | Invalid):
        return [(path, str(exc) or type(exc).__name__)]
    items: list[tuple[str, str]] = []
    for line in cattrs.transform_error(exc, path=path, format_exception=_format):
        encoded, _, where = line.partition(_END + " @ ")
        for item in encoded.split(_ITEM):
            suffix, _, reason = item.partition(_FIELD)
            items.append((where + suffix, reason))
    return items


def error_lines(exc: BaseException, *, path: str = "$") -> list[str]:
    """Every problem in a cattrs error as a `path: reason` line."""
    return [f"{where}: {reason}" for where, reason in error_items(exc, path=path)]
