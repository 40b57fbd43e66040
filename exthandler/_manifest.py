"""HandlerManifest.json: the package's description of its commands and behaviour."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import attrs
from exthandler_sdk import ErrorCode, Operation

from ._errors import PackageError
from ._fs import READ_LIMIT, UnsafeFileError, read_regular

__all__ = ["IN_PROCESS_KEY", "HandlerManifest", "ResourceLimits", "parse_manifest", "read_manifest"]

MANIFEST_NAME = "HandlerManifest.json"
# In a manifest the runtime wrote for an in-process handler: `module:Class`, the class that
# runs its operations (the reference agent ignores keys it does not know).
IN_PROCESS_KEY = "exthandlerInProcess"
_REQUIRED_COMMANDS = (Operation.INSTALL, Operation.ENABLE, Operation.DISABLE, Operation.UNINSTALL)


@attrs.frozen(kw_only=True)
class ResourceLimits:
    """`resourceLimits` of a manifest; `None` where the manifest sets no limit."""

    cpu_quota_percentage: int | None = None
    memory_quota_mb: int | None = None


@attrs.frozen(kw_only=True)
class HandlerManifest:
    """Element 0 of a HandlerManifest.json array, with the reference agent's coercions.

    `commands` maps each operation to its command line, relative to the handler dir.
    A package without an `updateCommand` has nothing to run during an upgrade's update step.
    `in_process` names the class of a handler dir laid out for an in-process handler.
    """

    name: str | None = None
    version: str | None = None
    commands: dict[Operation, str] = attrs.field(factory=dict)
    reboot_after_install: bool = False
    report_heartbeat: bool = False
    update_mode: str = "UpdateWithInstall"
    continue_on_update_failure: bool = False
    supports_multiple_extensions: bool = False
    resource_limits: ResourceLimits = attrs.field(factory=ResourceLimits)
    in_process: str | None = None

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
    """Parse manifest bytes; a UTF-8 BOM is ignored. Problems raise PackageError(1003)."""

    def fail(reason: str) -> PackageError:
        return PackageError(ErrorCode.MANIFEST_UNPARSABLE, f"{where}: {reason}")

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
        update_mode=mode if isinstance(mode, str) and mode else "UpdateWithInstall",
        continue_on_update_failure=_flag(body.get("continueOnUpdateFailure")),
        supports_multiple_extensions=_flag(body.get("supportsMultipleExtensions")),
        resource_limits=ResourceLimits(
            cpu_quota_percentage=_limit(limits.get("cpuQuotaPercentage")),
            memory_quota_mb=_limit(limits.get("memoryQuotaInMB")),
        ),
        in_process=spec if isinstance(spec, str) and spec else None,
    )


def read_manifest(path: Path) -> HandlerManifest:
    """Read and parse the HandlerManifest.json of a handler dir (the handler may have
    changed it since it was extracted).

    Missing, a link, a FIFO or anything but a regular file: PackageError(1002). Larger
    than `READ_LIMIT` (left unread) or unparsable: PackageError(1003). Never blocks.
    """
    try:
        data = read_regular(path, READ_LIMIT)
    except UnsafeFileError as exc:
        too_large = exc.errno == errno.EFBIG
        code = ErrorCode.MANIFEST_UNPARSABLE if too_large else ErrorCode.MANIFEST_NOT_FOUND
        raise PackageError(code, f"{path}: {exc.reason}") from exc
    except OSError as exc:
        reason = "missing" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise PackageError(ErrorCode.MANIFEST_NOT_FOUND, f"{path}: {reason}") from exc
    return parse_manifest(data, where=str(path))
