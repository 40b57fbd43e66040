"""Reading HandlerEnvironment.json from disk; what it means is `protocol`'s business."""

from __future__ import annotations

import os
from pathlib import Path

from ._files import write_atomic as write_atomic
from .protocol import (
    HANDLER_ENVIRONMENT_NAME,
    HandlerEnvironment,
    HandlerEnvironmentError,
    parse_handler_environment,
    read_protocol_variables,
)

__all__ = [
    "HandlerEnvironmentError",
    "load_handler_environment",
    "read_protocol_variables",
    "write_atomic",  # exthandler._testing imports it from here
]


def load_handler_environment(handler_dir: Path) -> HandlerEnvironment:
    """Parse `<handler_dir>/HandlerEnvironment.json` (a JSON array; element 0 counts).

    A UTF-8 BOM is tolerated. Relative folders are taken relative to `handler_dir`.
    `eventsFolder` is optional (older agents do not write it).
    """
    path = handler_dir / HANDLER_ENVIRONMENT_NAME
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            key = (str(path), info.st_ino, info.st_mtime_ns, info.st_size)
            cached = _environments.get(key)
            if cached is not None:  # a runtime running many operations in process
                return cached
            data = file.read()
    except OSError as exc:
        raise HandlerEnvironmentError(f"cannot read {path}: {exc.strerror}") from exc
    environment = parse_handler_environment(data, handler_dir, where=path)
    if len(_environments) >= _CACHED_ENVIRONMENTS:
        _environments.clear()
    _environments[key] = environment
    return environment


_CACHED_ENVIRONMENTS = 4096  # a runtime applies a step to every handler before the next
_environments: dict[tuple[str, int, int, int], HandlerEnvironment] = {}
