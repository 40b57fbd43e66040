"""Settings files, `config/<seq>.settings` (docs/protocol.md#on-disk): render and parse."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._errors import ExtHandlerError
from .._values import Value

__all__ = ["RawSettings", "SettingsFileError", "parse_settings", "render_settings"]

PUBLIC_PATH = "settings"
"""How a problem with the public settings is located in an error line."""


class SettingsFileError(ExtHandlerError, ValueError):
    """A settings file that is not one; the message is one `path: reason` line."""


class RawSettings(Value):
    """`runtimeSettings[0].handlerSettings` as found in the settings file."""

    public: Any = None
    protected: str | None = None
    thumbprint: str | None = None


def render_settings(
    public: Mapping[str, Any] | None, protected: str | None, thumbprint: str | None
) -> bytes:
    """The bytes of a settings file: one `handlerSettings` entry, nulls kept.

    `protected` is the base64 CMS envelope of the protected settings (never plain text).
    """
    document = {
        "runtimeSettings": [
            {
                "handlerSettings": {
                    "protectedSettingsCertThumbprint": thumbprint,
                    "protectedSettings": protected,
                    "publicSettings": None if public is None else dict(public),
                }
            }
        ]
    }
    return json.dumps(document).encode()


def parse_settings(data: bytes, *, where: str = "settings file") -> RawSettings:
    """Parse the bytes of a settings file; an empty file means no settings.

    A UTF-8 BOM is tolerated, `publicSettings` may be a JSON string holding the object
    (some wire formats carry it so). Problems raise SettingsFileError naming `where`.
    """
    text = data.decode("utf-8-sig", "replace").strip()
    if not text:
        return RawSettings()
    try:
        document: Any = json.loads(text)
    except ValueError as exc:
        raise SettingsFileError(f"{where}: not valid JSON ({exc})") from None
    runtime = document.get("runtimeSettings") if isinstance(document, dict) else None
    if not runtime:
        return RawSettings()
    first = runtime[0] if isinstance(runtime, list) else None
    handler = first.get("handlerSettings") if isinstance(first, dict) else None
    if not isinstance(handler, dict):
        raise SettingsFileError(f"{where}: runtimeSettings[0].handlerSettings: not an object")
    public = handler.get("publicSettings")
    if isinstance(public, str):
        try:
            public = json.loads(public) if public.strip() else None
        except ValueError:
            raise SettingsFileError(f"{PUBLIC_PATH}: not a JSON object") from None
    protected = handler.get("protectedSettings")
    thumbprint = handler.get("protectedSettingsCertThumbprint")
    return RawSettings(
        public=public,
        protected=protected if isinstance(protected, str) and protected.strip() else None,
        thumbprint=thumbprint if isinstance(thumbprint, str) else None,
    )
