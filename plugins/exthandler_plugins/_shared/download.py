"""Fetching files into a handler's dir: retries, a deadline, checksums, redaction.

Shared by the built-in handlers that download (CustomScript's `fileUris`, Run Command's
`source.scriptUri`).

Each file is tried up to `DownloadPolicy.attempts` times. Timeouts, connection errors,
408, 429 and 5xx are transient: the next attempt waits `backoff * 2**n` seconds (capped,
with +-50% jitter, or the server's `Retry-After` when it is shorter than the cap). Any
other 4xx is permanent and fails at once, as does a sha256 mismatch. All files together
must arrive within `DownloadPolicy.deadline` seconds. No message ever holds a URL's query
string or user info (see `_redact`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import random
import re
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs
from exthandler_sdk import HandlerError

from .redact import protect_http_logs, redact_text, redact_url

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DOWNLOAD_FAILED",
    "DownloadError",
    "DownloadPolicy",
    "FileSource",
    "StorageAccount",
    "download_all",
    "file_source",
    "shared_key",
]

DOWNLOAD_FAILED = 1
"""The status code of a failed download."""
STORAGE_API_VERSION = "2020-10-02"
_CHUNK = 64 * 1024
_TRANSIENT_STATUS = frozenset({408, 429})
_SCHEMES = ("http", "https", "file")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@attrs.frozen(kw_only=True)
class FileSource:
    """One file to fetch: where it comes from and what it is saved as."""

    url: str
    name: str
    sha256: str | None = None

    @property
    def redacted(self) -> str:
        return redact_url(self.url)


@attrs.frozen(kw_only=True)
class StorageAccount:
    """Credentials to sign blob requests with (SharedKey)."""

    name: str
    key: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class DownloadPolicy:
    """How hard to try (the handler's `download_policy` class attribute), and the
    `User-Agent` the requests carry."""

    attempts: int = 7
    backoff: float = 2.0
    max_backoff: float = 60.0
    deadline: float = 30 * 60.0
    connect_timeout: float = 30.0
    read_timeout: float = 120.0
    user_agent: str = "exthandler"


class DownloadError(HandlerError):
    """A file could not be fetched (the message is redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(DOWNLOAD_FAILED, redact_text(message))


def file_source(where: str, url: str, errors: list[str]) -> FileSource | None:
    """The source a settings URL names (saved under the last segment of its path), or None
    with a `where: reason` line added to `errors`: http, https or file URLs only, an
    optional `#sha256=<64 hex digits>` fragment (never sent) giving the file's digest."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        errors.append(f"{where}: not a URL ({redact_url(url)})")
        return None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        errors.append(
            f"{where}: unsupported URL scheme {scheme or '(none)'!r} in {redact_url(url)}; "
            "use http, https or file"
        )
        return None
    name = urllib.parse.unquote(parts.path.rpartition("/")[2])
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        errors.append(f"{where}: {redact_url(url)} does not end in a usable file name")
        return None
    digest: str | None = None
    if parts.fragment:
        key, _, value = parts.fragment.partition("=")
        if key.lower() != "sha256" or not _SHA256.fullmatch(value):
            errors.append(
                f"{where}: the URL fragment must be '#sha256=<64 hex digits>', "
                f"got '#{parts.fragment[:80]}'"
            )
            return None
        digest = value.lower()
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        errors.append(f"{where}: a file URL must name a local path, got host {parts.netloc!r}")
        return None
    clean = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return FileSource(url=clean, name=name, sha256=digest)


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def shared_key(
    account: StorageAccount, url: str, headers: dict[str, str], method: str = "GET"
) -> str:
    """The `Authorization` value of a SharedKey-signed blob request (no body, no range)."""
    parts = urllib.parse.urlsplit(url)
    canonical_headers = "".join(
        f"{name}:{headers[name].strip()}\n"
        for name in sorted(key for key in headers if key.lower().startswith("x-ms-"))
    )
    resource = f"/{account.name}{parts.path or '/'}"
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    for name in sorted(query, key=str.lower):
        resource += f"\n{name.lower()}:{','.join(sorted(query[name]))}"
    # VERB, then eleven standard headers we never send (Content-Length ... Range).
    text = method + "\n" * 12 + canonical_headers + resource
    signature = hmac.new(account.key, text.encode("utf-8"), hashlib.sha256).digest()
    return f"SharedKey {account.name}:{base64.b64encode(signature).decode('ascii')}"


def _signs_for(account: StorageAccount, host: str) -> bool:
    """Blob URLs of the account, and local emulators (an IP literal or localhost)."""
    host = host.lower()
    if host.startswith(f"{account.name}.blob."):
        return True
    if host == "localhost":
        return True
    import ipaddress  # here, like the other modules only downloads need: start-up stays short

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _headers(
    url: str, storage: StorageAccount | None, user_agent: str = "exthandler"
) -> dict[str, str]:
    headers = {"User-Agent": user_agent}
    host = urllib.parse.urlsplit(url).hostname or ""
    if storage is not None and _signs_for(storage, host):
        import email.utils

        headers["x-ms-date"] = email.utils.formatdate(usegmt=True)
        headers["x-ms-version"] = STORAGE_API_VERSION
        headers["Authorization"] = shared_key(storage, url, headers)
    return headers


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value.strip()))
    return None


def _check(source: FileSource, digest: str) -> None:
    if source.sha256 is not None and digest != source.sha256:
        raise DownloadError(
            f"{source.redacted}: sha256 mismatch: expected {source.sha256}, got {digest}"
        )


async def _fetch_http_once(
    client: httpx.AsyncClient,
    source: FileSource,
    target: Path,
    storage: StorageAccount | None,
    user_agent: str,
) -> None:
    import httpx

    partial = target.with_name(target.name + ".part")
    try:
        async with client.stream(
            "GET", source.url, headers=_headers(source.url, storage, user_agent)
        ) as response:
            code = response.status_code
            if code in _TRANSIENT_STATUS or code >= 500:
                raise _Transient(f"HTTP {code}", _retry_after(response.headers.get("Retry-After")))
            if code >= 400:
                raise DownloadError(f"{source.redacted}: HTTP {code} (not retried)")
            digest = hashlib.sha256()
            with partial.open("wb") as stream:
                async for chunk in response.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    stream.write(chunk)
    except httpx.TimeoutException as exc:
        raise _Transient(f"timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise _Transient(
            f"{type(exc).__name__}: {redact_text(str(exc)) or 'transport error'}"
        ) from None
    _check(source, digest.hexdigest())
    partial.replace(target)


async def _fetch_http(
    client: httpx.AsyncClient,
    source: FileSource,
    target: Path,
    policy: DownloadPolicy,
    storage: StorageAccount | None,
    log: logging.Logger,
) -> None:
    for attempt in range(1, policy.attempts + 1):
        try:
            await _fetch_http_once(client, source, target, storage, policy.user_agent)
        except _Transient as problem:
            if attempt == policy.attempts:
                raise DownloadError(
                    f"{source.redacted}: {problem.reason}; gave up after {attempt} attempts"
                ) from None
            wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
            wait *= random.uniform(0.5, 1.5)
            if problem.retry_after is not None:
                wait = min(policy.max_backoff, max(wait, problem.retry_after))
            log.warning(
                "%s: %s (attempt %d of %d); retrying in %.1f s",
                source.redacted,
                problem.reason,
                attempt,
                policy.attempts,
                wait,
            )
            await anyio.sleep(wait)
        else:
            return


def _copy_local(source: FileSource, target: Path) -> None:
    import urllib.request

    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source.url).path))
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".part")
    try:
        with path.open("rb") as reader, partial.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
    except OSError as exc:
        raise DownloadError(f"{source.redacted}: cannot read {path}: {exc.strerror}") from None
    _check(source, digest.hexdigest())
    partial.replace(target)


async def download_all(
    sources: Sequence[FileSource],
    directory: Path,
    *,
    policy: DownloadPolicy,
    storage: StorageAccount | None,
    log: logging.Logger,
) -> None:
    """Fetch every source into `directory` (in order) within the policy's deadline."""
    protect_http_logs()  # the HTTP library logs full URLs: SAS tokens included
    current: FileSource | None = None
    started = time.monotonic()
    try:
        with anyio.fail_after(policy.deadline):
            client: httpx.AsyncClient | None = None
            try:
                for source in sources:
                    current = source
                    target = directory / source.name
                    if source.url.lower().startswith("file:"):
                        await anyio.to_thread.run_sync(_copy_local, source, target)
                    else:
                        if client is None:
                            client = _client(policy)
                        await _fetch_http(client, source, target, policy, storage, log)
                    os.chmod(target, 0o700)
                    log.info("downloaded %s as %s", source.redacted, source.name)
            finally:
                if client is not None:
                    await client.aclose()
    except TimeoutError:
        where = f" while fetching {current.redacted}" if current is not None else ""
        raise DownloadError(
            f"downloads did not finish within {policy.deadline:g} s{where} "
            f"({time.monotonic() - started:.1f} s elapsed)"
        ) from None
    finally:
        with anyio.CancelScope(shield=True):  # even when our caller cancels us
            await anyio.to_thread.run_sync(_remove_partials, directory)


def _remove_partials(directory: Path) -> None:
    for leftover in directory.glob("*.part"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _client(policy: DownloadPolicy) -> httpx.AsyncClient:
    try:
        import httpx
    except ImportError:
        raise HandlerError(
            52, "downloading http(s) files needs the 'httpx' Python package, not installed here"
        ) from None
    timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=True, trust_env=True)
