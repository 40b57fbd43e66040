"""Locations: what a path or URL names, and how to print one without its credentials.

Standard library only, so that parsing a goal state or a command line that names a URL
never loads a network client.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from pathlib import Path
from typing import Literal

from .._values import Value, field

__all__ = [
    "Location",
    "is_url",
    "parse_location",
    "redact",
    "redact_text",
    "split_search_path",
]

Kind = Literal["file", "http", "s3", "gs", "azure"]

_MASK = "***"

# The patterns are compiled when first used: most commands, a quiet pass among them,
# only ask `is_url`, and compiling all four costs a few milliseconds.


@functools.cache
def _secret_keys() -> re.Pattern[str]:
    """Query keys whose values are credentials, whatever the store: Azure SAS (`sig`), S3
    and GCS presigned URLs, and the usual names of tokens, keys and passwords."""
    return re.compile(
        r"sig|signature|token|secret|password|passwd|pwd|credential|key|auth|code|session",
        re.IGNORECASE,
    )


@functools.cache
def _text_query() -> re.Pattern[str]:
    """In free text (an error message, a log line): `name=value` pairs after `?`, `&` or
    `;` (whose name may look like a credential)."""
    return re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&\s\"'<>;]*)")


@functools.cache
def _text_userinfo() -> re.Pattern[str]:
    """In free text: the userinfo of any URL."""
    return re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@\"'<>]+@")


@functools.cache
def _azure_host() -> re.Pattern[str]:
    return re.compile(r"\A(?P<account>[a-z0-9]{3,24})\.blob\.core\.[a-z0-9.\-]+\Z")


_SCHEMES: dict[str, Kind] = {
    "file": "file",
    "http": "http",
    "https": "http",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gs",
    "az": "azure",
    "azure": "azure",
}


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether `text` is a URL of a scheme the runtime reads (rather than a local path)."""
    if not isinstance(text, str):
        return False
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def split_search_path(value: str) -> list[str]:
    """The entries of a colon-separated list of paths and URLs (`$EXTHANDLER_REPO`): the
    colon of a URL's scheme (`https://`) and of a port (`host:8080`) separate nothing."""
    entries: list[str] = []
    for piece in value.split(":"):
        last = entries[-1] if entries else ""
        scheme = piece.startswith("//") and last.lower() in _SCHEMES
        port = (
            "://" in last
            and "/" not in last.partition("://")[2]
            and re.match(r"\A[0-9]+(/|\Z)", piece) is not None
        )
        if scheme or port:
            entries[-1] += ":" + piece
        else:
            entries.append(piece)
    return [entry for entry in entries if entry]


def _secret_key(name: str) -> bool:
    return bool(_secret_keys().search(name))


def redact(url: str) -> str:
    """`url` fit for a log or a message: userinfo and every credential-looking query value
    (`sig=`, `X-Amz-Signature=`, `token=`...) replaced by `***`. Anything that does not
    parse as a URL is redacted as free text."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        fields = []
        for field in query.split("&"):
            name, sep, _ = field.partition("=")
            unquoted = urllib.parse.unquote_plus(name)
            fields.append(f"{name}={_MASK}" if sep and _secret_key(unquoted) else field)
        query = "&".join(fields)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` (a message that may quote URLs) with every credential-looking query value and
    every URL userinfo replaced by `***`."""

    def query(match: re.Match[str]) -> str:
        if _secret_key(match["name"]):
            return match["lead"] + _MASK
        return match[0]

    text = _text_userinfo().sub(lambda m: f"{m['scheme']}{_MASK}@", text)
    return _text_query().sub(query, text)


class Location(Value):
    """A parsed path or URL.

    - `file`: `path` is the local path (`file://` URLs and plain paths).
    - `http`: `url` is fetched as it is (plain HTTP(S), no store semantics).
    - `s3`, `gs`: `bucket` and `key` (no leading `/`); credentials from the environment.
    - `azure`: `bucket` is the container, `key` the blob; `account`/`endpoint` when the
      URL names them (an `https://<account>.blob.core...` or Azurite-style
      `http://host:port/<account>/...` URL), `sas` the query string of a SAS URL; `az://`
      takes the account and credentials from the environment.
    """

    kind: Kind
    url: str
    path: Path | None = None
    bucket: str = ""
    key: str = ""
    account: str | None = None
    endpoint: str | None = None
    sas: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.redacted

    @property
    def redacted(self) -> str:
        """The location as given, fit for logs and messages."""
        return redact(self.url)

    @property
    def name(self) -> str:
        """The last segment of the path or key (the file name)."""
        if self.path is not None:
            return self.path.name
        if self.kind == "http":
            return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1])
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    def child(self, name: str) -> Location:
        """The location of `name` inside this one (a directory, a prefix): the query of a
        SAS or presigned URL is kept, so a container SAS reaches the blobs in it."""
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not a plain file name")
        if self.path is not None:
            return self.replace(url=os.fspath(self.path / name), path=self.path / name)
        parts = urllib.parse.urlsplit(self.url)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, path + urllib.parse.quote(name), parts.query, "")
        )
        key = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return self.replace(url=url, key=key + name)

    def sibling(self, name: str) -> Location:
        """The location of `name` beside this one (a sidecar next to a package)."""
        if self.path is not None:
            path = self.path.parent / name
            return self.replace(url=os.fspath(path), path=path)
        parts = urllib.parse.urlsplit(self.url)
        base = parts.path.rsplit("/", 1)[0]
        url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, f"{base}/{urllib.parse.quote(name)}", parts.query, "")
        )
        key = self.key.rsplit("/", 1)[0] + "/" + name if "/" in self.key else name
        return self.replace(url=url, key=key)

    def with_suffix_name(self, suffix: str) -> Location:
        """The location of this file's name plus `suffix` (`x.zip` -> `x.zip.sha256`)."""
        return self.sibling(self.name + suffix)


def _azure_sas(query: str) -> bool:
    names = {field.partition("=")[0].lower() for field in query.split("&")}
    return "sig" in names and bool(names & {"sv", "sr", "ss", "se"})


def parse_location(text: str | os.PathLike[str]) -> Location:
    """What `text` names: a local path, or a URL of a scheme the runtime reads.

    Raises ValueError (`<redacted text>: reason`) for a URL of another scheme or one that
    lacks its bucket or container.
    """
    if not isinstance(text, str):
        return Location(kind="file", url=os.fspath(text), path=Path(text))
    scheme, sep, _ = text.partition("://")
    if not sep:
        return Location(kind="file", url=text, path=Path(text))
    kind = _SCHEMES.get(scheme.lower())
    if kind is None:
        raise ValueError(
            f"{redact_text(text)}: unsupported scheme {scheme!r}"
            " (expected a path, file://, http(s)://, s3://, gs:// or az://)"
        )
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"{redact_text(text)}: not a valid URL ({exc})") from None
    path = urllib.parse.unquote(parts.path)
    if kind == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{redact(text)}: a file URL must name a local path")
        return Location(kind="file", url=text, path=Path(path))
    if kind == "http":
        if not parts.hostname:
            raise ValueError(f"{redact(text)}: no host")
        if not _azure_sas(parts.query):
            return Location(kind="http", url=text)
        # An Azure Blob URL with a SAS: the account is the host's first label, or for an
        # IP address or another host (Azurite), the first path segment.
        segments = path.lstrip("/").split("/", 1)
        host = parts.netloc.rpartition("@")[2]
        match = _azure_host().match((parts.hostname or "").lower())
        if match:
            account, endpoint = match["account"], f"{parts.scheme}://{host}"
        else:
            if len(segments) < 2 or not segments[0]:
                return Location(kind="http", url=text)  # not a blob: a plain URL with a query
            account, endpoint = segments[0], f"{parts.scheme}://{host}/{segments[0]}"
            segments = segments[1].split("/", 1)
        container = segments[0]
        if not container:
            raise ValueError(f"{redact(text)}: no container")
        key = segments[1] if len(segments) > 1 else ""
        return Location(
            kind="azure",
            url=text,
            bucket=container,
            key=key,
            account=account,
            endpoint=endpoint,
            sas=parts.query,
        )
    bucket = parts.netloc
    if not bucket or "@" in bucket:
        raise ValueError(f"{redact(text)}: no bucket or container")
    return Location(kind=kind, url=text, bucket=bucket, key=path.lstrip("/"))
