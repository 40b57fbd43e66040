"""Where `run` finds its goal states: a file, or a directory of them, watched by content.

The fleet sources (HTTP, object stores) will be further kinds of the same thing: something
polled for the goal state to apply now.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["SOURCE_LIMIT", "SourceWatcher"]

SOURCE_LIMIT = 64 * 1024 * 1024
"""The largest goal-state file `run` reads."""


class SourceWatcher:
    """Which goal state `run` should apply: SOURCE itself, or in a directory, the file
    whose content changed last.

    Changes are told by content (a digest of each file), never by modification times
    alone: a file copied with its old time (`cp -p`, `rsync -t`) or written while the
    clock stepped back is still new. At the first look, the newest file by time is the
    goal; afterwards, a file that appears or whose content changes becomes the goal (by
    time, then name, when several change at once).
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        self._digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._current: tuple[Path, bytes] | None = None

    def poll(self) -> tuple[Path, bytes] | None:
        """The goal state file to apply now and its bytes (None if there is none)."""
        if not self.source.is_dir():
            data = _read_source(self.source)
            self._current = None if data is None else (self.source, data)
            return self._current
        changed: list[tuple[int, str, Path, bytes]] = []
        seen: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        with os.scandir(self.source) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                info = entry.stat()
                key = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
                known = self._digests.get(entry.name)
                if known is not None and known[0] == key:
                    seen[entry.name] = known  # unchanged: no need to read it again
                    continue
                data = _read_source(Path(entry.path))
                if data is None:
                    continue
                digest = hashlib.sha256(data).hexdigest()
                seen[entry.name] = (key, digest)
                if known is None or known[1] != digest:
                    changed.append((info.st_mtime_ns, entry.name, Path(entry.path), data))
        self._digests = seen
        if changed:
            _, _, path, data = max(changed, key=lambda item: (item[0], item[1]))
            self._current = (path, data)
        elif self._current is not None and self._current[0].name not in seen:
            self._current = None  # the goal's file is gone: keep the last applied
        return self._current


def _read_source(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read(SOURCE_LIMIT)
    except OSError:
        return None
