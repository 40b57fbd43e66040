"""Reading `config/<seq>.settings` into the handler's declared settings types.

Public settings are structured into `S` and the decrypted protected settings into `P`
with one cattrs converter (built once by `make_converter`). Unknown keys are ignored:
ARM templates and portals routinely carry keys a given version does not know, and a
handler that wants to reject them can validate in its own attrs class. Primitive types are
strict where Python's constructors are lax: `bool` takes JSON booleans and the strings
"true"/"false" (any case), never `bool("false")`; `int` takes integers and integer
strings, never floats with a fraction or booleans; `str` takes only strings.

Every problem is gathered before anything is raised, so one `SettingsError` (error 53)
lists every bad field of both the public and the protected settings by path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs

from ._crypto import ProtectedSettingsError, decrypt_protected_settings
from ._errors import HandlerError
from .protocol import (
    INTEGER,
    ErrorCode,
    RawSettings,
    SettingsFileError,
    parse_settings,
)
from .protocol._settings import PUBLIC_PATH

__all__ = [
    "RawSettings",
    "SettingsError",
    "load_settings",
    "make_converter",
    "read_settings_file",
]

PROTECTED_PATH = "protectedSettings"


class SettingsError(HandlerError):
    """Settings that do not fit the handler's declared types: error 53.

    `errors` holds one `path: reason` line per problem, e.g.
    `settings.retries: invalid value for type, expected int`.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__(
            int(ErrorCode.CONFIGURATION), "invalid settings:\n" + "\n".join(self.errors)
        )


def read_settings_file(path: Path) -> RawSettings:
    """Read a settings file; a missing or empty file means no settings."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RawSettings()
    except OSError as exc:
        raise SettingsError([f"{path.name}: cannot be read ({exc.strerror})"]) from None
    try:
        return parse_settings(data, where=path.name)
    except SettingsFileError as exc:
        raise SettingsError([str(exc)]) from None


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected a boolean, got {_json_type(value)}")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        return int(value)
    raise ValueError(f"expected an integer, got {_json_type(value)}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {_json_type(value)}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


@functools.lru_cache(maxsize=1)
def _shared_converter() -> cattrs.Converter:
    """One converter per process, built on first use: cattrs compiles a structuring function
    per settings class and keeps it, so reusing the converter makes later loads cheap."""
    return make_converter()


def make_converter() -> cattrs.Converter:
    """The converter settings are structured with (strict primitives, extra keys ignored)."""
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(str, _structure_str)
    return converter


def _format(error: str) -> str:
    """cattrs' `reason @ path` as `path: reason`."""
    reason, at, path = error.rpartition(" @ ")
    return f"{path}: {reason}" if at else error


def _structure(
    converter: cattrs.Converter, value: Any, kind: type[Any], path: str, what: str
) -> tuple[Any, list[str]]:
    """(`value` structured into `kind`, []) or (None, the `path: reason` lines)."""
    if value is None:
        try:
            return converter.structure({}, kind), []
        except Exception:  # anything: the type cannot be built without data
            return None, [f"{path}: {what} are required"]
    if attrs.has(kind) and not isinstance(value, dict):
        return None, [f"{path}: expected a JSON object, got {_json_type(value)}"]
    try:
        return converter.structure(value, kind), []
    except Exception as exc:  # cattrs raises many kinds; all become path: reason lines
        return None, [_format(line) for line in cattrs.transform_error(exc, path=path)]


def load_settings(
    raw: RawSettings,
    public_type: type[Any] | None,
    protected_type: type[Any] | None,
    *,
    lib_dir: Path,
    use_library: bool = True,
) -> tuple[Any, Any]:
    """(public, protected) structured into the declared types (None for undeclared ones).

    Raises SettingsError listing every problem of both when anything does not fit.
    """
    converter = _shared_converter()
    errors: list[str] = []
    public: Any = None
    protected: Any = None
    if public_type is not None:
        public, problems = _structure(
            converter, raw.public, public_type, PUBLIC_PATH, "public settings"
        )
        errors += problems
    if protected_type is not None:
        plain: Any = None
        usable = True
        if raw.protected is not None:
            if raw.thumbprint is None:
                errors.append(f"{PROTECTED_PATH}: no protectedSettingsCertThumbprint given")
                usable = False
            else:
                try:
                    plain = decrypt_protected_settings(
                        raw.protected, lib_dir, raw.thumbprint, use_library=use_library
                    )
                except ProtectedSettingsError as exc:
                    errors.append(f"{PROTECTED_PATH}: {exc}")
                    usable = False
        if usable:
            protected, problems = _structure(
                converter, plain, protected_type, PROTECTED_PATH, "protected settings"
            )
            errors += problems
    if errors:
        raise SettingsError(errors)
    return public, protected
