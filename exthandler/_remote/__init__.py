"""Remote locations: goal states, packages and status documents on HTTP and object stores.

`parse_location` tells what a path or URL names (standard library only); `read`,
`download`, `list_names` and `write` reach it. The network clients (obstore, httpx) are
imported by the first operation that needs one, never by importing this package. Nothing
here writes a credential to a message: every error is a `RemoteError` whose message went
through `redact`.
"""

from ._url import Location, is_url, parse_location, redact, redact_text

__all__ = [
    "DEFAULT_LIMIT",
    "INDEX_NAME",
    "NOT_MODIFIED",
    "Downloaded",
    "Fetched",
    "Location",
    "NotModified",
    "RemoteError",
    "download",
    "is_url",
    "list_names",
    "parse_location",
    "read",
    "redact",
    "redact_text",
    "write",
]

from ._io import (
    DEFAULT_LIMIT,
    INDEX_NAME,
    NOT_MODIFIED,
    Downloaded,
    Fetched,
    NotModified,
    RemoteError,
    download,
    list_names,
    read,
    write,
)
