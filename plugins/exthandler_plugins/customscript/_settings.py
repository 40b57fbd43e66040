"""CustomScript's settings: the keys people already put in their templates.

Public and protected settings accept the same keys (`commandToExecute` is often
protected because it carries secrets), so both classes declare every key as optional and
`resolve()` merges them: a key given in both is a configuration error (53) naming it,
then the result is validated into a `Plan`, the one value the rest of the handler reads.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import zlib
from typing import Any

import attrs
from exthandler_sdk import ErrorCode, HandlerError

from .._shared.download import FileSource, StorageAccount, file_source

__all__ = [
    "CustomScriptProtectedSettings",
    "CustomScriptSettings",
    "FileSource",
    "Plan",
    "StorageAccount",
    "resolve",
]

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_GZIP_MAGIC = b"\x1f\x8b"


@attrs.frozen
class CustomScriptSettings:
    """Public settings (every key optional; see `resolve`)."""

    commandToExecute: str | None = None
    script: str | None = None
    fileUris: list[str] | None = None
    skipDos2Unix: bool | None = None
    timestamp: int | None = None
    storageAccountName: str | None = None
    storageAccountKey: str | None = None
    managedIdentity: dict[str, Any] | None = None


@attrs.frozen
class CustomScriptProtectedSettings(CustomScriptSettings):
    """Protected settings: the same keys, encrypted in transit."""


@attrs.frozen(kw_only=True)
class Plan:
    """What enable does, once the settings are merged and checked.

    `command_protected` says the command came from the protected settings: it must then
    never appear in a process's arguments (see `_handler.CustomScript._command`).
    """

    command: str | None = attrs.field(default=None, repr=False)
    command_protected: bool = False
    script: bytes | None = attrs.field(default=None, repr=False)
    files: tuple[FileSource, ...] = ()
    dos2unix: bool = True
    timestamp: int | None = None
    storage: StorageAccount | None = None


def _config_error(lines: list[str]) -> HandlerError:
    text = lines[0] if len(lines) == 1 else "invalid settings:\n" + "\n".join(lines)
    return HandlerError(int(ErrorCode.CONFIGURATION), text)


def _merge(
    public: CustomScriptSettings | None, protected: CustomScriptSettings | None
) -> tuple[dict[str, Any], list[str]]:
    merged: dict[str, Any] = {}
    errors: list[str] = []
    for field in attrs.fields(CustomScriptSettings):
        shown = getattr(public, field.name, None) if public is not None else None
        hidden = getattr(protected, field.name, None) if protected is not None else None
        if shown is not None and hidden is not None:
            errors.append(
                f"{field.name}: set in both the public and the protected settings; "
                "set it in one of them only"
            )
        merged[field.name] = hidden if hidden is not None else shown
    return merged, errors


def _decode_script(text: str) -> bytes:
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _config_error(["script: not valid base64"]) from None
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise _config_error(
                ["script: looks gzip-compressed but cannot be decompressed"]
            ) from None
    return data


def _storage(merged: dict[str, Any], errors: list[str]) -> StorageAccount | None:
    name, key = merged["storageAccountName"], merged["storageAccountKey"]
    if name is None and key is None:
        return None
    if name is None or key is None:
        errors.append(
            "storageAccountName and storageAccountKey: give both, or neither "
            f"(only {'storageAccountName' if key is None else 'storageAccountKey'} is set)"
        )
        return None
    if not _ACCOUNT.fullmatch(name):
        errors.append(
            "storageAccountName: a storage account name is 3 to 24 lowercase letters and digits"
        )
        return None
    try:
        secret = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if not secret:
        errors.append("storageAccountKey: not a base64 storage account key")
        return None
    return StorageAccount(name=name, key=secret)


def resolve(public: CustomScriptSettings | None, protected: CustomScriptSettings | None) -> Plan:
    """Merge and check the settings; `HandlerError(53)` listing every problem otherwise."""
    merged, errors = _merge(public, protected)
    if merged["managedIdentity"] is not None:
        errors.append(
            "managedIdentity: not supported here: this runtime has no instance metadata "
            "service to obtain a token from; use SAS URLs or "
            "storageAccountName/storageAccountKey instead"
        )
        if merged["storageAccountName"] is not None or merged["storageAccountKey"] is not None:
            errors.append("managedIdentity cannot be combined with storageAccountName/Key")
    command, script_text = merged["commandToExecute"], merged["script"]
    if command is not None and not command.strip():
        errors.append("commandToExecute: must not be empty")
    if script_text is not None and not script_text.strip():
        errors.append("script: must not be empty")
    if command is None and script_text is None:
        errors.append("one of commandToExecute or script is required")
    elif command is not None and script_text is not None:
        errors.append("commandToExecute and script: give one of them, not both")
    files: list[FileSource] = []
    for index, url in enumerate(merged["fileUris"] or []):
        source = file_source(f"fileUris[{index}]", url, errors)
        if source is not None:
            files.append(source)
    names: dict[str, int] = {}
    for index, source in enumerate(files):
        if source.name in names:
            errors.append(
                f"fileUris: {source.redacted} and another URL would both be saved as "
                f"{source.name!r}"
            )
        names[source.name] = index
    storage = _storage(merged, errors)
    if errors:
        raise _config_error(errors)
    script = _decode_script(script_text) if script_text is not None else None
    return Plan(
        command=command,
        command_protected=protected is not None and protected.commandToExecute is not None,
        script=script,
        files=tuple(files),
        dos2unix=not merged["skipDos2Unix"],
        timestamp=merged["timestamp"],
        storage=storage,
    )
