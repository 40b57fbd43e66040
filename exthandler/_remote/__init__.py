"""Remote locations: goal states, packages and status documents on HTTP and object stores.

`parse_location` tells what a path or URL names (standard library only); `read`,
`download`, `list_names` and `write` reach it. Importing this package loads neither the
event loop nor a network client: the operations (`_io`) load on first use, and obstore
and httpx with the first operation that needs them. Nothing here writes a credential to a
message: every error is a `RemoteError` whose message went through `redact`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._url import Location, is_url, parse_location, redact, redact_text, split_search_path

if TYPE_CHECKING:
    from ._io import DEFAULT_LIMIT as DEFAULT_LIMIT
    from ._io import INDEX_NAME as INDEX_NAME
    from ._io import NOT_MODIFIED as NOT_MODIFIED
    from ._io import Downloaded as Downloaded
    from ._io import Fetched as Fetched
    from ._io import NotModified as NotModified
    from ._io import RemoteError as RemoteError
    from ._io import download as download
    from ._io import list_names as list_names
    from ._io import read as read
    from ._io import write as write

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
    "split_search_path",
    "write",
]

_LAZY = {
    "DEFAULT_LIMIT",
    "INDEX_NAME",
    "NOT_MODIFIED",
    "Downloaded",
    "Fetched",
    "NotModified",
    "RemoteError",
    "download",
    "list_names",
    "read",
    "write",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _io

        return getattr(_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
