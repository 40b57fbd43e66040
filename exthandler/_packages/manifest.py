"""Reading a handler dir's HandlerManifest.json; what it means is `protocol.parse_manifest`'s
business, this module turns its errors into the runtime's PackageError (1002, 1003)."""

from __future__ import annotations

import errno
from pathlib import Path

from exthandler_sdk import ErrorCode
from exthandler_sdk.protocol import (
    IN_PROCESS_KEY,
    MANIFEST_NAME,
    HandlerManifest,
    ManifestError,
    ResourceLimits,
)
from exthandler_sdk.protocol import parse_manifest as _parse_manifest

from .._errors import PackageError
from .._fs import READ_LIMIT, UnsafeFileError, read_regular

__all__ = [
    "IN_PROCESS_KEY",
    "MANIFEST_NAME",
    "HandlerManifest",
    "ResourceLimits",
    "parse_manifest",
    "read_manifest",
]


def parse_manifest(data: bytes, *, where: str = MANIFEST_NAME) -> HandlerManifest:
    """Parse manifest bytes; a UTF-8 BOM is ignored. Problems raise PackageError(1003)."""
    try:
        return _parse_manifest(data, where=where)
    except ManifestError as exc:
        raise PackageError(ErrorCode.MANIFEST_UNPARSABLE, str(exc)) from exc


def read_manifest(path: Path | str) -> HandlerManifest:
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
