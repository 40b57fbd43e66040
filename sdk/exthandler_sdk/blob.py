"""Writing Azure blobs through a SAS URL, with the standard library alone.

A handler packaged as a zip runs under a bare `python3`, so this module imports nothing
beyond the standard library. Three kinds of blob:

- `put_block_blob`: the whole content in one `PUT` (`x-ms-blob-type: BlockBlob`).
- `put_page_blob`: a `PUT` creating a page blob of the content's size rounded up to 512
  bytes (`x-ms-blob-content-length`), then `PUT ?comp=page` for each chunk of at most
  4 MiB, with `x-ms-range` and `x-ms-page-write: update`; the last page is padded with
  zero bytes.
- `create_append_blob` then `append_block` (each call appends; content over 4 MiB goes in
  several blocks), or both at once with `put_append_blob`.

Every request carries `x-ms-version` and `x-ms-date` and has a timeout; at most
`RESPONSE_LIMIT` bytes of any response are read. A failure raises `BlobError`, whose
message names the URL through `redact_url`: a SAS signature (`sig=`) and any other
credential in the URL never appear in it, nor in anything else this module says.
`redact_url` and `redact_text` are public so that callers keep their own messages clean
the same way.
"""

from __future__ import annotations

import email.utils
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import ExtHandlerError

__all__ = [
    "API_VERSION",
    "APPEND_BLOCK_LIMIT",
    "PAGE_SIZE",
    "PAGE_WRITE_LIMIT",
    "REDACTED",
    "RESPONSE_LIMIT",
    "BlobError",
    "PutResult",
    "append_block",
    "create_append_blob",
    "is_sas_url",
    "put_append_blob",
    "put_blob",
    "put_block_blob",
    "put_page_blob",
    "redact_text",
    "redact_url",
]

API_VERSION = "2019-12-12"
"""The `x-ms-version` every request sends (append blobs need 2015-02-21 or later)."""
PAGE_SIZE = 512
"""A page blob's size and every page write are multiples of this."""
PAGE_WRITE_LIMIT = 4 * 1024 * 1024
"""The most one `?comp=page` request writes."""
APPEND_BLOCK_LIMIT = 4 * 1024 * 1024
"""The most one `?comp=appendblock` request appends."""
RESPONSE_LIMIT = 64 * 1024
"""The most read from any response body."""
DEFAULT_TIMEOUT = 30.0
REDACTED = "<redacted>"

# Query parameters whose values are harmless and help to read a message: the SAS fields
# that say what a signature allows and until when, and the blob API's own operation names.
# Every other value (sig, X-Amz-Signature, tokens, anything unknown) is redacted.
_PLAIN_QUERY_KEYS = frozenset(
    {"sv", "ss", "srt", "sp", "se", "st", "spr", "sr", "comp", "restype", "timeout"}
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class BlobError(ExtHandlerError):
    """A blob request failed. The message never holds a credential.

    `status` is the HTTP status (None when no answer came), `error_code` the service's
    `x-ms-error-code`, and `retryable` whether trying again later may succeed (no answer,
    a timeout, 408, 429 or a 5xx).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.retryable = retryable


@dataclass(frozen=True)
class PutResult:
    """What the last request of a write answered: its status, the blob's new ETag, and
    how many requests the write took."""

    status: int
    etag: str | None
    requests: int


# -- redaction ---------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """`url` without a password in its user info, and with the value of every query
    parameter replaced by `<redacted>` except the SAS fields that are not secrets (`sv`,
    `se`, `sp`...): `https://a/c/b?sv=2019-12-12&sig=<redacted>`."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
        user = parts.username
    except ValueError:
        base, query = url.split("#", 1)[0].partition("?")[::2]
        base = base.rpartition("@")[2]
        return f"{base}?{REDACTED}" if query else base
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if user is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _redact_pair(pair: str) -> str:
    key, equals, value = pair.partition("=")
    if not equals:
        return key if urllib.parse.unquote(key).lower() in _PLAIN_QUERY_KEYS else REDACTED
    if not value or urllib.parse.unquote(key).lower() in _PLAIN_QUERY_KEYS:
        return pair  # an empty value holds no secret (and text already redacted stays so)
    return f"{key}={REDACTED}"


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def _secrets(url: str) -> list[str]:
    """The credential values `url` carries, raw and decoded, longest first."""
    found: set[str] = set()
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            found.add(parts.password)
    except ValueError:
        pass
    query = url.partition("?")[2].partition("#")[0]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if value and urllib.parse.unquote(key).lower() not in _PLAIN_QUERY_KEYS:
            found.update({value, urllib.parse.unquote(value), urllib.parse.unquote_plus(value)})
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    text = redact_text(text)
    for secret in _secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def is_sas_url(url: str) -> bool:
    """Whether `url` is http(s) with an Azure shared access signature in its query (both
    `sv=` and `sig=`)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https"):
        return False
    keys = {urllib.parse.unquote(pair.partition("=")[0]).lower() for pair in parts.query.split("&")}
    return {"sv", "sig"} <= keys


# -- requests ----------------------------------------------------------------------------


def _with_query(url: str, extra: str) -> str:
    base, _, fragment = url.partition("#")
    joined = f"{base}&{extra}" if "?" in base else f"{base}?{extra}"
    return f"{joined}#{fragment}" if fragment else joined


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A blob write is never redirected; a redirect is answered as the failure it is."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    # The environment's proxy settings apply, like any other urllib request.
    return urllib.request.build_opener(_NoRedirects())


def _request(
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    timeout: float,
    expect: int = 201,
) -> tuple[int, str | None]:
    """One `PUT`; returns the status and ETag, or raises BlobError."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        raise BlobError(f"{redact_url(url)}: not an http(s) URL")
    all_headers = {
        "x-ms-version": API_VERSION,
        "x-ms-date": email.utils.formatdate(usegmt=True),
        "Content-Length": str(len(data)),
        **headers,
    }
    # The scheme was checked above: http(s) only.
    request = urllib.request.Request(url, data=data, method="PUT", headers=all_headers)  # noqa: S310
    where = redact_url(url)
    try:
        with _opener().open(request, timeout=timeout) as response:
            response.read(RESPONSE_LIMIT)
            status = int(response.status)
            etag = response.headers.get("ETag")
    except urllib.error.HTTPError as error:
        status = int(error.code)
        code = error.headers.get("x-ms-error-code") if error.headers else None
        try:
            body = error.read(RESPONSE_LIMIT)
        except (OSError, ValueError):
            body = b""
        finally:
            error.close()
        detail = code or _xml_field(body, "Code") or (error.reason or "")
        message = f"{where}: {what}: HTTP {status}" + (f" {detail}" if detail else "")
        raise BlobError(
            _scrub(message, url),
            status=status,
            error_code=code,
            retryable=status in _RETRYABLE_STATUSES,
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, (TimeoutError, socket.timeout)):
            text = f"no answer within {timeout:g} s"
        else:
            text = str(reason) or type(reason).__name__
        raise BlobError(_scrub(f"{where}: {what}: {text}", url), retryable=True) from None
    if status != expect:
        raise BlobError(
            f"{where}: {what}: HTTP {status}, expected {expect}",
            status=status,
            retryable=status in _RETRYABLE_STATUSES,
        )
    return status, etag


def _xml_field(body: bytes, name: str) -> str | None:
    match = re.search(rb"<" + name.encode() + rb">([^<]{1,200})</", body)
    return match.group(1).decode("utf-8", "replace") if match else None


def _content_headers(content_type: str | None) -> dict[str, str]:
    return {"Content-Type": content_type or "application/octet-stream"}


# -- the three kinds of blob -------------------------------------------------------------


def put_block_blob(
    url: str,
    data: bytes,
    *,
    content_type: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PutResult:
    """Write `data` as a block blob at `url` (a SAS URL), replacing what was there."""
    headers = {"x-ms-blob-type": "BlockBlob", **_content_headers(content_type)}
    status, etag = _request(url, bytes(data), headers, what="put block blob", timeout=timeout)
    return PutResult(status, etag, 1)


def put_page_blob(
    url: str,
    data: bytes,
    *,
    content_type: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PutResult:
    """Write `data` as a page blob at `url`: created at the size rounded up to 512 bytes,
    then filled page by page (the last one padded with zero bytes)."""
    data = bytes(data)
    size = -(-len(data) // PAGE_SIZE) * PAGE_SIZE
    headers = {
        "x-ms-blob-type": "PageBlob",
        "x-ms-blob-content-length": str(size),
        **_content_headers(content_type),
    }
    status, etag = _request(url, b"", headers, what="create page blob", timeout=timeout)
    requests = 1
    page_url = _with_query(url, "comp=page")
    padded = data + b"\0" * (size - len(data))
    for start in range(0, size, PAGE_WRITE_LIMIT):
        chunk = padded[start : start + PAGE_WRITE_LIMIT]
        headers = {
            "x-ms-range": f"bytes={start}-{start + len(chunk) - 1}",
            "x-ms-page-write": "update",
        }
        status, etag = _request(page_url, chunk, headers, what="put page", timeout=timeout)
        requests += 1
    return PutResult(status, etag, requests)


def create_append_blob(
    url: str, *, content_type: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> PutResult:
    """Create an empty append blob at `url`, replacing what was there."""
    headers = {"x-ms-blob-type": "AppendBlob", **_content_headers(content_type)}
    status, etag = _request(url, b"", headers, what="create append blob", timeout=timeout)
    return PutResult(status, etag, 1)


def append_block(url: str, data: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> PutResult:
    """Append `data` to the append blob at `url` (in blocks of at most 4 MiB).

    Appending nothing sends nothing and answers `PutResult(0, None, 0)`.
    """
    data = bytes(data)
    result = PutResult(0, None, 0)
    block_url = _with_query(url, "comp=appendblock")
    for start in range(0, len(data), APPEND_BLOCK_LIMIT):
        chunk = data[start : start + APPEND_BLOCK_LIMIT]
        status, etag = _request(block_url, chunk, {}, what="append block", timeout=timeout)
        result = PutResult(status, etag, result.requests + 1)
    return result


def put_append_blob(
    url: str,
    data: bytes,
    *,
    content_type: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PutResult:
    """Create an append blob at `url` holding `data` (later calls to `append_block` add
    to it)."""
    created = create_append_blob(url, content_type=content_type, timeout=timeout)
    appended = append_block(url, data, timeout=timeout)
    if not appended.requests:
        return created
    return PutResult(appended.status, appended.etag, appended.requests + 1)


def put_blob(
    url: str,
    data: bytes,
    blob_type: str = "BlockBlob",
    *,
    content_type: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PutResult:
    """Write `data` at `url` as a `BlockBlob`, `PageBlob` or `AppendBlob` (the name is
    matched case-insensitively, as the goal state's `statusBlobType` is)."""
    kind = blob_type.strip().lower()
    if kind == "blockblob":
        return put_block_blob(url, data, content_type=content_type, timeout=timeout)
    if kind == "pageblob":
        return put_page_blob(url, data, content_type=content_type, timeout=timeout)
    if kind == "appendblob":
        return put_append_blob(url, data, content_type=content_type, timeout=timeout)
    raise BlobError(f"{redact_url(url)}: unknown blob type {blob_type!r}")
