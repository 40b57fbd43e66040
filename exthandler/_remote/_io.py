"""Reading, listing and writing locations: local files, plain HTTP(S), S3, GCS, Azure Blob.

- Object stores (S3, GCS, Azure Blob, Azure SAS URLs, Azurite) go through `obstore`,
  whose stores take their credentials and endpoints from each store's usual environment
  (`AWS_*`, `GOOGLE_*`, `AZURE_STORAGE_*`). obstore's async API runs on asyncio only,
  and the runtime also runs on trio, so its blocking API is called in worker threads.
  obstore reads `*_ALLOW_HTTP` for S3 from the environment but not for Azure or GCS:
  plain-HTTP endpoints (Azurite, moto) are allowed here when the endpoint named by the URL
  or by `AWS_ENDPOINT(_URL)`, `AZURE_STORAGE_ENDPOINT` or `GOOGLE_*ENDPOINT` is
  `http://`, or `<STORE>_ALLOW_HTTP` is true.
- Plain HTTP(S) goes through `httpx`, where redirects, `ETag`/`If-None-Match`, and the
  checks of a body against its `Content-Length` are the runtime's own.
- Local paths (and `file://`) are read with the standard library.

Every read is capped, every error is a `RemoteError` whose message is
`<redacted location>: <reason>`, and a conditional read (`etag=`) of something unchanged
returns `NOT_MODIFIED` at the cost of one small request.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._fs import write_atomic
from ._url import Location, parse_location, redact, redact_text

if TYPE_CHECKING:
    import httpx
    from obstore.store import ObjectStore

__all__ = [
    "DEFAULT_LIMIT",
    "NOT_MODIFIED",
    "Downloaded",
    "Fetched",
    "NotModified",
    "RemoteError",
    "download",
    "list_names",
    "read",
    "write",
]

DEFAULT_LIMIT: Final = 64 * 1024 * 1024
"""The most a `read` takes in memory unless told otherwise (a goal state, a manifest)."""
DEFAULT_TIMEOUT: Final = 30.0
"""Seconds without progress (connecting, or between two reads) before a request fails."""
_CHUNK = 1 << 20
_MAX_REDIRECTS = 5
_REASON_LIMIT = 400

_T = TypeVar("_T")


class RemoteError(Exception):
    """A location could not be read, listed or written.

    `message` is `<redacted location>: <reason>` and never holds a credential. `missing` is
    true when the store said the object does not exist (HTTP 404/410, NotFound).
    """

    def __init__(self, location: Location | str, reason: str, *, missing: bool = False) -> None:
        where = location.redacted if isinstance(location, Location) else redact(location)
        self.location = where
        self.reason = redact_text(reason)
        self.message = f"{where}: {self.reason}"
        self.missing = missing
        super().__init__(self.message)


@attrs.frozen
class Fetched:
    """The bytes read, and what identifies this content at the store for the next
    conditional read (`etag`, else the object's `version`)."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    etag: str | None = None
    version: str | None = None

    @property
    def tag(self) -> str | None:
        """The value to pass as `etag=` next time."""
        return self.etag or (f"version:{self.version}" if self.version else None)


class NotModified:
    """The object still has the tag the conditional read named."""

    def __repr__(self) -> str:
        return "NOT_MODIFIED"


NOT_MODIFIED: Final = NotModified()


@attrs.frozen
class Downloaded:
    """A download to a file: its size and sha256 (of the bytes written), and its tag."""

    size: int
    sha256: str
    etag: str | None = None


def _location(where: Location | str) -> Location:
    if isinstance(where, Location):
        return where
    try:
        return parse_location(where)
    except ValueError as exc:
        raise RemoteError(where, str(exc).rpartition(": ")[2]) from None


def _reason(exc: BaseException) -> str:
    """One line saying why, from any exception (obstore's carry pages of debug output)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    text = redact_text(text)
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


async def _in_thread(func: Callable[[], _T]) -> _T:
    return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)


# -- object stores (obstore) ------------------------------------------------------------

_stores: dict[tuple[str, ...], ObjectStore] = {}
_stores_lock = threading.Lock()
_STORES_KEPT = 64


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _allow_http(location: Location) -> bool:
    if location.endpoint is not None:
        return location.endpoint.startswith("http://")
    names = {
        "s3": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP"),
        "gs": ("GOOGLE_STORAGE_ENDPOINT", "GOOGLE_SERVICE_ENDPOINT", "GOOGLE_ALLOW_HTTP"),
        "azure": ("AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT", "AZURE_STORAGE_ALLOW_HTTP"),
    }[location.kind]
    *endpoints, flag = names
    return _truthy(os.environ.get(flag)) or any(
        os.environ.get(name, "").startswith("http://") for name in endpoints
    )


def _object_store(location: Location, io_timeout: float) -> ObjectStore:
    """The obstore store for the bucket or container of `location` (kept for reuse: a
    store holds a connection pool)."""
    allow_http = _allow_http(location)
    key = (
        location.kind,
        location.bucket,
        location.account or "",
        location.endpoint or "",
        location.sas or "",
        str(io_timeout),
        str(allow_http),
    )
    with _stores_lock:
        store = _stores.get(key)
    if store is not None:
        return store
    from obstore.store import AzureStore, GCSStore, S3Store

    client: Any = {
        "allow_http": allow_http,
        "connect_timeout": timedelta(seconds=min(io_timeout, 10.0)),
        # A stall, not a whole transfer: a large package may take longer than this.
        "read_timeout": timedelta(seconds=io_timeout),
        "timeout": timedelta(hours=1),
    }
    # One quick retry of a dropped connection; the callers' own backoff does the rest.
    retry: Any = {
        "max_retries": 1,
        "retry_timeout": timedelta(seconds=io_timeout),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=1),
            "base": 2,
        },
    }
    new: ObjectStore
    if location.kind == "s3":
        new = S3Store(location.bucket, client_options=client, retry_config=retry)
    elif location.kind == "gs":
        new = GCSStore(location.bucket, client_options=client, retry_config=retry)
    else:
        config: Any = {}
        if location.account is not None:
            config["account_name"] = location.account
        if location.endpoint is not None:
            config["endpoint"] = location.endpoint
        if location.sas is not None:
            config["sas_key"] = location.sas
        new = AzureStore(location.bucket, client_options=client, retry_config=retry, **config)
    with _stores_lock:
        if len(_stores) >= _STORES_KEPT:
            _stores.clear()
        _stores[key] = new
    return new


def _store_error(location: Location, exc: BaseException) -> RemoteError:
    from obstore.exceptions import (
        NotFoundError,
        PermissionDeniedError,
        UnauthenticatedError,
    )

    if isinstance(exc, NotFoundError | FileNotFoundError):
        return RemoteError(location, "not found", missing=True)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError | PermissionError):
        return RemoteError(location, f"access denied ({_reason(exc)})")
    return RemoteError(location, _reason(exc))


def _store_read(
    location: Location, etag: str | None, limit: int, io_timeout: float
) -> Fetched | NotModified:
    import obstore
    from obstore.exceptions import NotModifiedError

    store = _object_store(location, io_timeout)
    options: Any = {}
    if etag is not None and etag.startswith("version:"):
        # A store without ETags: ask for the metadata first, then the bytes if it changed.
        try:
            meta = obstore.head(store, location.key)
        except Exception as exc:
            raise _store_error(location, exc) from exc
        if meta["version"] == etag.removeprefix("version:"):
            return NOT_MODIFIED
    elif etag is not None:
        options["if_none_match"] = etag
    try:
        result = obstore.get(store, location.key, options=options)
        meta = result.meta
        if meta["size"] > limit:
            raise RemoteError(location, f"larger than {limit} bytes ({meta['size']})")
        chunks: list[bytes] = []
        size = 0
        for chunk in result.stream(min_chunk_size=_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RemoteError(location, f"larger than {limit} bytes")
            chunks.append(bytes(chunk))
    except NotModifiedError:
        return NOT_MODIFIED
    except RemoteError:
        raise
    except Exception as exc:
        raise _store_error(location, exc) from exc
    if size != meta["size"]:
        raise RemoteError(location, f"{size} bytes received of {meta['size']}")
    return Fetched(b"".join(chunks), etag=meta["e_tag"], version=meta["version"])


def _store_download(location: Location, dest: Path, limit: int, io_timeout: float) -> Downloaded:
    import obstore

    store = _object_store(location, io_timeout)
    digest = hashlib.sha256()
    size = 0
    try:
        result = obstore.get(store, location.key)
        meta = result.meta
        if meta["size"] > limit:
            raise RemoteError(location, f"larger than {limit} bytes ({meta['size']})")
        with open(dest, "xb") as out:
            for chunk in result.stream(min_chunk_size=_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise RemoteError(location, f"larger than {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
    except RemoteError:
        raise
    except Exception as exc:
        raise _store_error(location, exc) from exc
    if size != meta["size"]:
        raise RemoteError(location, f"{size} bytes received of {meta['size']}")
    return Downloaded(size, digest.hexdigest(), meta["e_tag"])


def _store_list(location: Location, io_timeout: float) -> list[str]:
    import obstore

    store = _object_store(location, io_timeout)
    prefix = location.key if not location.key or location.key.endswith("/") else location.key + "/"
    try:
        listing = obstore.list_with_delimiter(store, prefix or None)
    except Exception as exc:
        raise _store_error(location, exc) from exc
    names = (str(meta["path"])[len(prefix) :] for meta in listing["objects"])
    return sorted(name for name in names if name and "/" not in name)


def _store_write(location: Location, data: bytes, io_timeout: float) -> None:
    import obstore

    store = _object_store(location, io_timeout)
    try:
        obstore.put(store, location.key, data)
    except Exception as exc:
        raise _store_error(location, exc) from exc


# -- plain HTTP (httpx) -----------------------------------------------------------------

_ssl_context: Any = None


def protect_http_logs() -> None:
    """Redact every URL in what the `httpx` logger records: it logs each request's full
    URL at INFO, so a host application that turns logging on would otherwise record a SAS
    token or a presigned URL's signature."""
    import logging

    class RedactingFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            redacted = redact_text(message)
            if redacted != message:
                record.msg, record.args = redacted, None
            return True

    logger = logging.getLogger("httpx")
    if not any(type(f).__name__ == "RedactingFilter" for f in logger.filters):
        logger.addFilter(RedactingFilter())


def _client(io_timeout: float) -> httpx.AsyncClient:
    """A client for one operation (clients belong to one event loop; the costly part, the
    TLS context, is made once and shared). Its request log lines are redacted."""
    import ssl

    import httpx

    protect_http_logs()

    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(io_timeout, connect=min(io_timeout, 10.0)),
        follow_redirects=True,
        max_redirects=_MAX_REDIRECTS,
        verify=_ssl_context,
        trust_env=True,
    )


def _http_status_error(location: Location, response: httpx.Response) -> RemoteError:
    missing = response.status_code in (404, 410)
    phrase = response.reason_phrase or ""
    return RemoteError(location, f"HTTP {response.status_code} {phrase}".strip(), missing=missing)


async def _http_stream(
    location: Location,
    etag: str | None,
    limit: int,
    io_timeout: float,
    sink: Callable[[bytes], None],
) -> tuple[str | None, int] | NotModified:
    """GET `location`, handing each chunk of the body to `sink`; (etag, size)."""
    import httpx

    headers = {"If-None-Match": etag} if etag is not None else {}
    try:
        async with (
            _client(io_timeout) as client,
            client.stream("GET", location.url, headers=headers) as response,
        ):
            if response.status_code == 304 and etag is not None:
                return NOT_MODIFIED
            if response.status_code != 200:
                raise _http_status_error(location, response)
            declared = response.headers.get("Content-Length")
            expected = int(declared) if declared and declared.isdigit() else None
            if expected is not None and expected > limit:
                raise RemoteError(location, f"larger than {limit} bytes ({expected})")
            size = 0
            async for chunk in response.aiter_raw(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise RemoteError(location, f"larger than {limit} bytes")
                sink(chunk)
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            if expected is not None and size != expected and encoding == "identity":
                raise RemoteError(location, f"{size} bytes received of {expected}")
            return response.headers.get("ETag"), size
    except RemoteError:
        raise
    except httpx.TooManyRedirects:
        raise RemoteError(location, f"more than {_MAX_REDIRECTS} redirects") from None
    except httpx.TimeoutException as exc:
        raise RemoteError(location, f"timed out ({exc.__class__.__name__})") from None
    except (httpx.HTTPError, OSError) as exc:
        raise RemoteError(location, _reason(exc) or exc.__class__.__name__) from None


# -- local files ------------------------------------------------------------------------


def _file_tag(info: os.stat_result) -> str:
    return f"file:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


def _file_read(location: Location, etag: str | None, limit: int) -> Fetched | NotModified:
    assert location.path is not None
    try:
        with open(location.path, "rb") as stream:
            info = os.fstat(stream.fileno())
            tag = _file_tag(info)
            if etag == tag:
                return NOT_MODIFIED
            if info.st_size > limit:
                raise RemoteError(location, f"larger than {limit} bytes ({info.st_size})")
            data = stream.read(limit + 1)
    except FileNotFoundError:
        raise RemoteError(location, "not found", missing=True) from None
    except IsADirectoryError:
        raise RemoteError(location, "a directory, not a file") from None
    except OSError as exc:
        raise RemoteError(location, exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise RemoteError(location, f"larger than {limit} bytes")
    return Fetched(data, etag=tag)


def _file_download(location: Location, dest: Path, limit: int) -> Downloaded:
    fetched = _file_read(location, None, limit)
    assert isinstance(fetched, Fetched)
    with open(dest, "xb") as out:
        out.write(fetched.data)
    return Downloaded(len(fetched.data), hashlib.sha256(fetched.data).hexdigest(), fetched.etag)


def _file_list(location: Location) -> list[str]:
    assert location.path is not None
    try:
        with os.scandir(location.path) as entries:
            return sorted(entry.name for entry in entries if entry.is_file())
    except FileNotFoundError:
        raise RemoteError(location, "not found", missing=True) from None
    except OSError as exc:
        raise RemoteError(location, exc.strerror or str(exc)) from None


def _file_write(location: Location, data: bytes) -> None:
    assert location.path is not None
    try:
        write_atomic(location.path, data)
    except OSError as exc:
        raise RemoteError(location, exc.strerror or str(exc)) from None


# -- the operations ---------------------------------------------------------------------


async def read(
    where: Location | str,
    *,
    etag: str | None = None,
    limit: int = DEFAULT_LIMIT,
    io_timeout: float = DEFAULT_TIMEOUT,
) -> Fetched | NotModified:
    """The bytes at `where` (at most `limit`), or NOT_MODIFIED when `etag` (a previous
    `Fetched.tag`) still names what is there. Raises RemoteError."""
    location = _location(where)
    if location.kind == "file":
        return _file_read(location, etag, limit)
    if location.kind == "http":
        chunks: list[bytes] = []
        outcome = await _http_stream(location, etag, limit, io_timeout, chunks.append)
        if isinstance(outcome, NotModified):
            return outcome
        return Fetched(b"".join(chunks), etag=outcome[0])
    return await _in_thread(lambda: _store_read(location, etag, limit, io_timeout))


async def download(
    where: Location | str,
    dest: Path,
    *,
    limit: int,
    io_timeout: float = DEFAULT_TIMEOUT,
) -> Downloaded:
    """Stream the object at `where` into the new file `dest` (at most `limit` bytes),
    hashing it on the way. On any error `dest` is removed and RemoteError raised."""
    location = _location(where)
    part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        if location.kind == "file":
            result = await _in_thread(lambda: _file_download(location, part, limit))
        elif location.kind == "http":
            digest = hashlib.sha256()
            with open(part, "xb") as out:  # noqa: ASYNC230 (chunks written as they come)

                def sink(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

                outcome = await _http_stream(location, None, limit, io_timeout, sink)
            assert not isinstance(outcome, NotModified)
            result = Downloaded(outcome[1], digest.hexdigest(), outcome[0])
        else:
            result = await _in_thread(lambda: _store_download(location, part, limit, io_timeout))
        os.replace(part, dest)
    except OSError as exc:
        raise RemoteError(location, f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)
    return result


INDEX_NAME: Final = "index.json"
"""What a plain HTTP(S) directory serves to be listed: a JSON array of file names."""


async def list_names(where: Location | str, *, io_timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The names of the files directly in the directory, prefix or container `where`,
    sorted. Plain HTTP(S) cannot list: `where`/index.json is read instead (a JSON array
    of names). A location that does not exist raises RemoteError with `missing`."""
    location = _location(where)
    if location.kind == "file":
        return _file_list(location)
    if location.kind == "http":
        index = location.child(INDEX_NAME)
        fetched = await read(index, limit=16 * 1024 * 1024, io_timeout=io_timeout)
        assert isinstance(fetched, Fetched)
        try:
            names = json.loads(fetched.data)
        except ValueError as exc:
            raise RemoteError(index, f"not valid JSON ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise RemoteError(index, "not a JSON array of file names")
        return sorted({name for name in names if name and "/" not in name})
    return await _in_thread(lambda: _store_list(location, io_timeout))


async def write(where: Location | str, data: bytes, *, io_timeout: float = DEFAULT_TIMEOUT) -> None:
    """Put `data` at `where`: an atomic file write, an object write (S3, GCS, Azure Blob
    as a block blob), or an HTTP PUT. Raises RemoteError."""
    location = _location(where)
    if location.kind == "file":
        _file_write(location, data)
        return
    if location.kind == "http":
        import httpx

        try:
            async with _client(io_timeout) as client:
                response = await client.put(location.url, content=data)
        except httpx.HTTPError as exc:
            raise RemoteError(location, _reason(exc)) from None
        if response.status_code >= 300:
            raise _http_status_error(location, response)
        return
    await _in_thread(lambda: _store_write(location, data, io_timeout))
