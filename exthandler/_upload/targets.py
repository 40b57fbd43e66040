"""Where a status document goes, and how it is written there.

- Azure Blob rules (`x-ms-blob-type` BlockBlob or PageBlob, `exthandler_sdk.blob`): the
  goal state's own status blob, and any http(s) URL whose query carries a SAS (`sv=` and
  `sig=`), Azurite's included.
- A local path or `file://` URL: an atomic file write (mode 0600, like the view file).
- Any other `http(s)` URL: a plain `PUT`; `s3://`, `gs://`, `az://` (and an Azure URL
  whose SAS lacks `sv=`): an object write with the store's credentials from the
  environment. Both go through the remote-access layer (`exthandler._remote`).

Every message names the destination through `shown`, without its credentials.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
from exthandler_sdk.blob import is_sas_url, redact_text, redact_url

from .._model import StatusBlobType

if TYPE_CHECKING:
    from .._remote import Location

__all__ = ["Destination", "UploadError", "destination", "write"]

Kind = Literal["azure", "file", "remote"]


class UploadError(Exception):
    """An upload failed; the message never holds a credential."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen(kw_only=True)
class Destination:
    """A parsed status destination. `url` may carry a credential: use `shown`."""

    kind: Kind
    url: str = attrs.field(repr=False)
    blob_type: StatusBlobType = StatusBlobType.BLOCK_BLOB
    path: Path | None = None
    location: Location | None = attrs.field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """The destination, fit for a log line."""
        return str(self.path) if self.kind == "file" else redact_url(self.url)


def destination(
    url: str | os.PathLike[str], blob_type: StatusBlobType | None = None
) -> Destination:
    """Parse where to upload. `blob_type` is the goal state's `statusBlobType` (its blob
    always follows the Azure rules). Raises ValueError (`<redacted url>: reason`)."""
    text = os.fspath(url)
    scheme, sep, _ = text.partition("://")
    if blob_type is not None and scheme.lower() not in ("http", "https"):
        raise ValueError(f"{redact_url(text)}: a status blob must be an http(s) URL")
    if not sep:
        if not text:
            raise ValueError("the status destination is empty")
        return Destination(kind="file", url=text, path=Path(text).absolute())
    scheme = scheme.lower()
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{redact_url(text)}: a file URL must name a local path")
        return Destination(kind="file", url=text, path=Path(urllib.parse.unquote(parts.path)))
    if scheme in ("http", "https"):
        try:
            host = urllib.parse.urlsplit(text).hostname
        except ValueError:
            host = None
        if not host:
            raise ValueError(f"{redact_url(text)}: no host")
        if blob_type is not None or is_sas_url(text):
            return Destination(
                kind="azure", url=text, blob_type=blob_type or StatusBlobType.BLOCK_BLOB
            )
    from .._remote import is_url, parse_location

    if not is_url(text):
        raise ValueError(
            f"{redact_url(text)}: unsupported status destination (expected a path, file://,"
            " http(s)://, s3://, gs:// or az://)"
        )
    # parse_location's reason names the URL without its credentials.
    return Destination(kind="remote", url=text, location=parse_location(text))


def _write_blob(where: Destination, data: bytes, timeout: float) -> None:
    from exthandler_sdk.blob import BlobError, put_blob

    try:
        put_blob(
            where.url, data, where.blob_type.value, content_type="application/json", timeout=timeout
        )
    except BlobError as exc:
        raise UploadError(exc.message) from None


def _write_file(where: Destination, data: bytes) -> None:
    from .._fs import write_atomic

    assert where.path is not None
    try:
        write_atomic(where.path, data, mode=0o600)
    except OSError as exc:
        raise UploadError(f"{where.path}: cannot write: {exc.strerror or exc}") from None


async def _write_remote(where: Destination, data: bytes, request_timeout: float) -> None:
    from .._remote import RemoteError
    from .._remote import write as remote_write

    assert where.location is not None
    try:
        await remote_write(where.location, data, io_timeout=request_timeout)
    except RemoteError as exc:
        raise UploadError(exc.message) from None


async def write(where: Destination, data: bytes, *, request_timeout: float) -> None:
    """Write `data` at `where` (blocking work in a worker thread: the event loop never
    waits on the network or the disk). Raises UploadError."""
    import anyio.to_thread

    try:
        if where.kind == "remote":
            await _write_remote(where, data, request_timeout)
        elif where.kind == "azure":
            await anyio.to_thread.run_sync(
                _write_blob, where, data, request_timeout, abandon_on_cancel=True
            )
        else:
            await anyio.to_thread.run_sync(_write_file, where, data, abandon_on_cancel=True)
    except UploadError:
        raise
    except Exception as exc:  # whatever else a writer raises is a failed upload, redacted
        raise UploadError(f"{where.shown}: {redact_text(str(exc)) or type(exc).__name__}") from None
