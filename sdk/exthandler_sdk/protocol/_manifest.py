"""HandlerManifest.json (docs/protocol.md#packages): render and parse."""

from __future__ import annotations

import json
import re
from typing import Any

from .._errors import ExtHandlerError
from .._values import Value, field
from ._codes import Operation
from ._names import MANIFEST_NAME
from ._policy import SIGNING_INFO_KEY, SigningInfo

__all__ = [
    "IN_PROCESS_KEY",
    "HandlerManifest",
    "ManifestError",
    "ResourceLimits",
    "manifest_document",
    "parse_manifest",
    "render_manifest",
]

IN_PROCESS_KEY = "exthandlerInProcess"
"""Key naming, as `module:Class`, the class that runs an in-process handler's operations
(the reference agent ignores keys it does not know)."""
UPDATE_WITH_INSTALL = "UpdateWithInstall"
_REQUIRED_COMMANDS = (Operation.INSTALL, Operation.ENABLE, Operation.DISABLE, Operation.UNINSTALL)
_FLOAT_VERSION = re.compile(r"[0-9]+\.[0-9]+")


class ManifestError(ExtHandlerError, ValueError):
    """Manifest bytes that are not a usable HandlerManifest.json (error 1003)."""


class ResourceLimits(Value):
    """`resourceLimits` of a manifest; `None` where the manifest sets no limit."""

    cpu_quota_percentage: int | None = None
    memory_quota_mb: int | None = None


class HandlerManifest(Value):
    """Element 0 of a HandlerManifest.json array, with the reference agent's coercions.

    `commands` maps each operation to its command line, relative to the handler dir.
    A package without an `updateCommand` has nothing to run during an upgrade's update step.
    `in_process` names the class of a handler dir laid out for an in-process handler.
    `signing_info` is what a signed package says it was signed as (None: not given).
    """

    name: str | None = None
    version: str | None = None
    commands: dict[Operation, str] = field(default_factory=dict)
    reboot_after_install: bool = False
    report_heartbeat: bool = False
    update_mode: str = UPDATE_WITH_INSTALL
    continue_on_update_failure: bool = False
    supports_multiple_extensions: bool = False
    resource_limits: ResourceLimits = field(default_factory=ResourceLimits)
    in_process: str | None = None
    signing_info: SigningInfo | None = None

    @property
    def update_with_install(self) -> bool:
        """Whether the new version's install runs during an upgrade."""
        return self.update_mode.lower() == "updatewithinstall"

    def command(self, operation: Operation) -> str | None:
        return self.commands.get(operation)


def _flag(value: object) -> bool:
    """Booleans may be JSON booleans or "true"/"false" strings; anything else is false."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def _limit(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value > 0 else None


def parse_manifest(data: bytes, *, where: str = MANIFEST_NAME) -> HandlerManifest:
    """Parse manifest bytes; a UTF-8 BOM is ignored. Problems raise ManifestError, whose
    message is one `where: reason` line (the agent reports them as error 1003)."""

    def fail(reason: str) -> ManifestError:
        return ManifestError(f"{where}: {reason}")

    try:
        document: Any = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise fail(f"not valid JSON ({exc})") from exc
    if isinstance(document, dict):
        # Some packages ship a bare object; accept it as element 0.
        document = [document]
    if not isinstance(document, list) or not document or not isinstance(document[0], dict):
        raise fail("must be a JSON array whose first element is an object")
    entry: dict[str, Any] = document[0]
    body = entry.get("handlerManifest")
    if not isinstance(body, dict):
        raise fail("[0].handlerManifest: missing or not an object")
    commands: dict[Operation, str] = {}
    problems: list[str] = []
    for operation in Operation:
        value = body.get(operation.manifest_key)
        if isinstance(value, str) and value.strip():
            commands[operation] = value.strip()
        elif value is not None or operation in _REQUIRED_COMMANDS:
            problems.append(
                f"[0].handlerManifest.{operation.manifest_key}: missing or not a command"
            )
    if problems:
        raise fail("; ".join(problems))
    limits = entry.get("resourceLimits")
    limits = limits if isinstance(limits, dict) else {}
    mode = body.get("updateMode")
    name = entry.get("name")
    version = entry.get("version")
    spec = entry.get(IN_PROCESS_KEY)
    return HandlerManifest(
        name=name if isinstance(name, str) else None,
        version=None if version is None else str(version),
        commands=commands,
        reboot_after_install=_flag(body.get("rebootAfterInstall")),
        report_heartbeat=_flag(body.get("reportHeartbeat")),
        update_mode=mode if isinstance(mode, str) and mode else UPDATE_WITH_INSTALL,
        continue_on_update_failure=_flag(body.get("continueOnUpdateFailure")),
        supports_multiple_extensions=_flag(body.get("supportsMultipleExtensions")),
        resource_limits=ResourceLimits(
            cpu_quota_percentage=_limit(limits.get("cpuQuotaPercentage")),
            memory_quota_mb=_limit(limits.get("memoryQuotaInMB")),
        ),
        in_process=spec if isinstance(spec, str) and spec else None,
        signing_info=(
            SigningInfo.from_json(entry[SIGNING_INFO_KEY]) if SIGNING_INFO_KEY in entry else None
        ),
    )


def manifest_document(manifest: HandlerManifest) -> list[dict[str, Any]]:
    """The JSON document of `manifest` (what `render_manifest` serialises).

    A version such as `1.0` is written as a JSON number, as the reference packages do.
    """
    version: object = manifest.version
    if manifest.version is not None and _FLOAT_VERSION.fullmatch(manifest.version):
        number = float(manifest.version)
        version = number if str(number) == manifest.version else manifest.version
    body: dict[str, Any] = {
        operation.manifest_key: manifest.commands[operation]
        for operation in Operation
        if operation in manifest.commands
    }
    body.update(
        {
            "rebootAfterInstall": manifest.reboot_after_install,
            "reportHeartbeat": manifest.report_heartbeat,
            "supportsMultipleExtensions": manifest.supports_multiple_extensions,
            "updateMode": manifest.update_mode,
            "continueOnUpdateFailure": manifest.continue_on_update_failure,
        }
    )
    entry: dict[str, Any] = {"name": manifest.name, "version": version, "handlerManifest": body}
    limits = manifest.resource_limits
    if limits != ResourceLimits():
        entry["resourceLimits"] = {
            key: value
            for key, value in (
                ("cpuQuotaPercentage", limits.cpu_quota_percentage),
                ("memoryQuotaInMB", limits.memory_quota_mb),
            )
            if value is not None
        }
    if manifest.in_process is not None:
        entry[IN_PROCESS_KEY] = manifest.in_process
    if manifest.signing_info is not None:
        entry[SIGNING_INFO_KEY] = manifest.signing_info.to_json()
    return [entry]


def render_manifest(manifest: HandlerManifest, *, indent: int | None = None) -> bytes:
    """The bytes of HandlerManifest.json for `manifest`; with `indent`, keys are sorted
    and a newline ends the file (the form packages carry)."""
    document = manifest_document(manifest)
    if indent is None:
        return json.dumps(document).encode()
    return (json.dumps(document, indent=indent, sort_keys=True) + "\n").encode()
