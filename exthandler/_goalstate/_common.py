"""Small checks shared by the goal-state parsers: states, thumbprints, base64, settings.

Each check returns a value or raises ValueError whose message is the reason part of a
`path: reason` problem, so every format reports the same thing the same way.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from exthandler._convert import Invalid, json_kind
from exthandler._model import (
    EncryptedProtectedSettings,
    ExtensionGoal,
    HandlerName,
    ProtectedSettings,
    RequestedState,
    StatusBlobType,
    Version,
    consistency_problems,
)
from exthandler._values import Value

__all__ = [
    "WireSettings",
    "shown",
    "content_id",
    "located_consistency_problems",
    "parse_encrypted",
    "parse_handler_name",
    "parse_state",
    "parse_status_blob_type",
    "parse_status_blob_url",
    "parse_thumbprint",
    "parse_version",
    "parse_wire_number",
    "wire_flag",
    "wire_handler_settings",
]

_THUMBPRINT_RE = re.compile(r"\A[0-9A-F]{40}\Z")
_NUMBER_RE = re.compile(r"\A[0-9]{1,18}\Z")
_STATES = ", ".join(state.value for state in RequestedState)


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)`, cut short: reasons quote user input, which may be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def content_id(data: bytes) -> str:
    """A goal state's id when its content names none: a short hash of the bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


_STATE_NAMES = {state.value: state for state in RequestedState}


def parse_state(value: object) -> RequestedState:
    """`enabled`, `disabled` or `uninstall`, in any case."""
    if isinstance(value, str):
        state = _STATE_NAMES.get(value.strip().lower())
        if state is not None:
            return state
    raise ValueError(f"{shown(value)} is not a state ({_STATES})")


def parse_version(value: object) -> Version:
    if not isinstance(value, str):
        raise ValueError(f"must be a version string, not {json_kind(value)}")
    if len(value) > 64:
        raise ValueError(f"{shown(value)} is not a version (too long)")
    # Version.parse raises VersionError (a ValueError); int() of a huge part raises ValueError.
    return Version.parse(value)


def parse_handler_name(value: object) -> HandlerName:
    if not isinstance(value, str):
        raise ValueError(f"must be a handler name string, not {json_kind(value)}")
    if len(value) > 256:
        raise ValueError(f"{shown(value)} is not a handler name (too long)")
    return HandlerName.parse(value)


def parse_thumbprint(value: object) -> str:
    """A SHA-1 certificate thumbprint, normalised to upper-case hex."""
    if not isinstance(value, str):
        raise ValueError(f"must be a thumbprint string, not {json_kind(value)}")
    normalised = value.strip().upper()
    if not _THUMBPRINT_RE.match(normalised):
        raise ValueError(f"{shown(value)} is not a certificate thumbprint (40 hexadecimal digits)")
    return normalised


def parse_encrypted(value: object) -> str:
    """Encrypted protected settings, or a package's `encodedSignature`: non-empty base64
    text (whitespace is dropped)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a base64 string, not {json_kind(value)}")
    compact = "".join(value.split())
    if not compact:
        raise ValueError("is empty")
    try:
        binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not valid base64 ({exc})") from None
    return compact


def parse_wire_number(value: object) -> int:
    """A non-negative integer as the wire formats write them: a JSON number or digits."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return value
    if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        return int(value.strip())
    raise ValueError(f"{shown(value)} is not a non-negative integer")


def wire_flag(value: object, *, default: bool) -> bool:
    """A wire-format boolean: true/false or the strings "true"/"false" in any case."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


class WireSettings(Value):
    """The settings of one extension as the wire formats carry them."""

    public: Mapping[str, Any] | None = None
    protected: ProtectedSettings | None = None


def _public(value: object) -> Mapping[str, Any] | None:
    """Public settings: an object, null, or (vmSettings) an object serialised as a string."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise Invalid.many([(".publicSettings", f"not valid JSON ({exc})")]) from None
    if value is None or isinstance(value, Mapping):
        return value
    raise Invalid.many([(".publicSettings", f"must be an object, not {json_kind(value)}")])


def wire_handler_settings(value: object) -> WireSettings:
    """Read a `handlerSettings` object (XML) or a vmSettings settings entry.

    Raises `Invalid` with one `(suffix, reason)` problem, relative to `value`, when the
    extension's settings cannot be used.
    """
    if value is None:
        return WireSettings()
    if not isinstance(value, Mapping):
        raise Invalid(f"must be an object, not {json_kind(value)}")
    fields = {str(k).lower(): v for k, v in value.items()}
    public = _public(fields.get("publicsettings"))
    encrypted = fields.get("protectedsettings")
    if encrypted is None or encrypted == "":
        return WireSettings(public=public)
    try:
        data = parse_encrypted(encrypted)
    except ValueError as exc:
        raise Invalid.many([(".protectedSettings", str(exc))]) from None
    where = ".protectedSettingsCertThumbprint"
    thumbprint = fields.get("protectedsettingscertthumbprint")
    if thumbprint is None:
        raise Invalid.many([(where, "required with protectedSettings")])
    try:
        thumbprint = parse_thumbprint(thumbprint)
    except ValueError as exc:
        raise Invalid.many([(where, str(exc))]) from None
    return WireSettings(
        public=public, protected=EncryptedProtectedSettings(data=data, thumbprint=thumbprint)
    )


def located_consistency_problems(
    extensions: tuple[ExtensionGoal, ...],
    *,
    paths: list[str],
    root: str,
    renames: Mapping[str, str] | None = None,
) -> list[str]:
    """`consistency_problems`, with each extension's index replaced by where it was written.

    `paths[i]` is the location of `extensions[i]` in the document; `renames` turns the
    model's field names (`.name`, `.dependsOn[`) into the format's spelling.
    """
    marker = "\x00"
    lines = []
    for line in consistency_problems(extensions, path=marker):
        where, sep, reason = line.partition(": ")
        for old, new in (renames or {}).items():
            if where.endswith(old) or (old.endswith("[") and old in where):
                where = where.replace(old, new)
        lines.append(_locate(where, paths, root) + sep + _locate(reason, paths, root))
    return lines


def _locate(text: str, paths: list[str], root: str) -> str:
    text = re.sub(r"\x00\[([0-9]+)\]", lambda m: paths[int(m.group(1))], text)
    return text.replace("\x00", root)


def parse_status_blob_type(value: object) -> StatusBlobType:
    """`statusBlobType`: BlockBlob or PageBlob, in any case."""
    if isinstance(value, str):
        for kind in StatusBlobType:
            if value.strip().lower() == kind.value.lower():
                return kind
    kinds = ", ".join(kind.value for kind in StatusBlobType)
    raise ValueError(f"{shown(value)} is not a blob type ({kinds})")


def parse_status_blob_url(value: object) -> str:
    """The status blob's URL, as given: whether it can be written to is the uploader's
    to find out and log (an unusable status blob never keeps extensions from running)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a URL string, not {json_kind(value)}")
    return value.strip()
