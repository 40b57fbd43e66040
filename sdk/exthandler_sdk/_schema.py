"""`python -m exthandler_sdk schema MODULE:CLASS`: the settings as a JSON Schema.

The schema (draft 2020-12) is derived from the attrs classes a handler declares as
`Handler[S, P]`, so that whoever writes a goal state can validate `settings` and
`protectedSettings` before deploying. Annotations this module does not understand become
`{}` (anything) with a note, never an error: the schema documents, the SDK validates.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import enum
import inspect
import itertools
import json
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any

import attrs

from ._handler import Handler

__all__ = ["SCHEMA_DIALECT", "main_schema", "settings_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SEQUENCES = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_JSON_SCALARS = (str, int, float, bool, type(None))


def settings_schema(handler_class: type[Handler[Any, Any]]) -> dict[str, Any]:
    """The JSON Schema of the settings object a goal state gives `handler_class`."""
    public, protected = handler_class.settings_types()
    builder = _Builder()
    name = getattr(handler_class, "name", handler_class.__name__)
    version = getattr(handler_class, "version", "?")
    document: dict[str, Any] = {
        "$schema": SCHEMA_DIALECT,
        "title": f"{name} {version} settings",
        "type": "object",
        "properties": {
            "publicSettings": builder.top_level(public),
            "protectedSettings": builder.top_level(protected),
        },
    }
    if builder.defs:
        document["$defs"] = builder.defs
    return document


def main_schema(argv: Sequence[str]) -> int:
    """The `schema` command: print the schema (indent 2, sorted keys) and exit 0, else 2."""
    from ._package import PackageError, load_handler_class

    parser = argparse.ArgumentParser(
        prog="python -m exthandler_sdk schema",
        description="Print the JSON Schema of a Handler class's settings.",
    )
    parser.add_argument("spec", metavar="MODULE:CLASS")
    args = parser.parse_args(list(argv))
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        handler_class = load_handler_class(args.spec)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(settings_schema(handler_class), indent=2, sort_keys=True))
    return 0


def _unsupported(annotation: Any) -> dict[str, Any]:
    return {"description": f"unsupported annotation {_describe(annotation)}: not checked here"}


def _describe(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation)


class _Builder:
    """Turns annotations into schemas, collecting attrs classes in `$defs`."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self._names: dict[type[Any], str] = {}

    def top_level(self, settings_type: type[Any] | None) -> dict[str, Any]:
        if settings_type is None:
            return {"type": "null"}
        if attrs.has(settings_type):
            return self._object(settings_type)
        return self.schema(settings_type)

    def schema(self, annotation: Any) -> dict[str, Any]:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if annotation is Any:
            return {}
        if annotation is None or annotation is type(None):
            return {"type": "null"}
        if isinstance(annotation, type) and annotation in _SCALARS:
            return {"type": _SCALARS[annotation]}
        if origin is typing.Annotated:
            return self.schema(args[0])
        if origin is typing.Literal:
            return {"enum": [_json_value(arg) for arg in args]}
        if origin in (typing.Union, types.UnionType):
            return self._union(args)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return {"enum": [_json_value(member.value) for member in annotation]}
        if isinstance(annotation, type) and attrs.has(annotation):
            return {"$ref": f"#/$defs/{self._define(annotation)}"}
        if annotation is tuple:
            return {"type": "array"}
        if origin is tuple:
            return self._tuple(args)  # tuple[()] has no args: the empty array
        if annotation in _SEQUENCES or origin in _SEQUENCES:
            array: dict[str, Any] = {"type": "array"}
            if args:
                array["items"] = self.schema(args[0])
            if (origin or annotation) in (set, frozenset, collections.abc.Set):
                array["uniqueItems"] = True
            return array
        if annotation in _MAPPINGS or origin in _MAPPINGS:
            mapping: dict[str, Any] = {"type": "object"}
            if args:
                mapping["additionalProperties"] = self.schema(args[1])
            return mapping
        supertype = getattr(annotation, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self.schema(supertype)
        return _unsupported(annotation)

    def _union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        return {"anyOf": [self.schema(arg) for arg in args]}

    def _tuple(self, args: tuple[Any, ...]) -> dict[str, Any]:
        if not args:
            return {"type": "array", "maxItems": 0}
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": self.schema(args[0])}
        return {
            "type": "array",
            "prefixItems": [self.schema(arg) for arg in args],
            "items": False,
            "minItems": len(args),
            "maxItems": len(args),
        }

    def _define(self, cls: type[Any]) -> str:
        if cls in self._names:
            return self._names[cls]
        name = cls.__qualname__
        if name in self.defs:
            name = f"{cls.__module__}.{cls.__qualname__}"
        self._names[cls] = name
        self.defs[name] = {}  # reserved first: a class may refer to itself
        self.defs[name] = self._object(cls)
        return name

    def _object(self, cls: type[Any]) -> dict[str, Any]:
        hints = _type_hints(cls)
        docs = _attribute_docs(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            if not field.init:
                continue
            annotation = hints.get(field.name, field.type)
            if isinstance(annotation, str):
                prop: dict[str, Any] = {
                    "description": f"unresolved annotation {annotation!r}: not checked here"
                }
            else:
                prop = dict(self.schema(annotation))
            description = field.metadata.get("description") or docs.get(field.name)
            if description:
                note = prop.get("description")
                prop["description"] = f"{description}\n\n({note})" if note else str(description)
            if field.default is attrs.NOTHING:
                required.append(field.name)
            else:
                default = _default_value(field.default)
                if default is not _NO_DEFAULT:
                    prop["default"] = default
            properties[field.name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if cls.__doc__:
            schema["description"] = inspect.cleandoc(cls.__doc__)
        return schema


_NO_DEFAULT = object()


def _default_value(default: Any) -> Any:
    """The JSON form of a simple default, or _NO_DEFAULT when it has none."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory = default.factory
        if not default.takes_self and factory in (list, tuple, set, frozenset):
            return []
        if not default.takes_self and factory is dict:
            return {}
        return _NO_DEFAULT
    if isinstance(default, enum.Enum):
        return _json_value(default.value)  # as the schema's enum lists it
    if isinstance(default, _JSON_SCALARS):
        return default
    if isinstance(default, list | tuple | frozenset | set):
        items = [_default_value(item) for item in default]
        return _NO_DEFAULT if any(item is _NO_DEFAULT for item in items) else items
    if isinstance(default, dict) and all(isinstance(key, str) for key in default):
        values = {key: _default_value(value) for key, value in default.items()}
        if any(value is _NO_DEFAULT for value in values.values()):
            return _NO_DEFAULT
        return values
    return _NO_DEFAULT


def _json_value(value: Any) -> Any:
    return value if isinstance(value, _JSON_SCALARS) else repr(value)


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    """Resolved annotations of `cls`, or none when they do not resolve (strings stay)."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # any error in user annotations: fall back to the raw ones
        return {}


def _attribute_docs(cls: type[Any]) -> dict[str, str]:
    """Attribute docstrings: a string literal right after `name: type` in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs
