"""File helpers the SDK's own writes go through, public so that the runtime and plugins
write files the same way: atomic replacement with an explicit mode whatever the umask."""

from __future__ import annotations

from ._files import UMASK as UMASK
from ._files import fsync_dir as fsync_dir
from ._files import write_atomic as write_atomic

__all__ = ["UMASK", "fsync_dir", "write_atomic"]
