"""`exthandler logs`: the runtime's log, or one extension's logs, and following them.

Extensions write their log folders: no link in one is followed (a link is named and
skipped), and no read goes past `TAIL_CAP` bytes of a file at a time.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from .._fs import UnsafeFileError, open_dir, open_regular

__all__ = ["TAIL_CAP", "Follower", "handler_logs", "last_lines", "printable"]

TAIL_CAP = 1 << 20  # the last lines come from at most this many bytes of the file's end
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` without the control characters a terminal would act on (an extension's log
    is not trusted to move the cursor or retitle the window); tabs and newlines stay."""
    return _CONTROLS.sub("?", text)


def last_lines(path: Path, count: int) -> tuple[bytes, int, int]:
    """The last `count` lines of the regular file at `path` (never through a link), read
    from at most its last `TAIL_CAP` bytes; with its inode and the offset read up to."""
    with open_regular(path) as file:
        size = file.size
        start = max(0, size - TAIL_CAP)
        data = os.pread(file.fd, size - start, start)
        inode = file.info.st_ino
    if count <= 0:
        return b"", inode, start + len(data)
    lines = data.splitlines(keepends=True)
    if start > 0 and lines:
        lines = lines[1:]  # the first is cut
    return b"".join(lines[-count:]), inode, start + len(data)


def handler_logs(directory: Path) -> tuple[list[Path], list[str]]:
    """A handler's log folder: its regular files (CommandExecution.log first), and one
    note for each entry not shown (a link, a dir with how many entries it holds)."""
    fd = open_dir(directory)  # the folder itself must not be a link either
    try:
        with os.scandir(fd) as scan:
            entries = sorted(
                ((entry.name, entry.stat(follow_symlinks=False)) for entry in scan),
                key=lambda item: (item[0] != "CommandExecution.log", item[0]),
            )
    finally:
        os.close(fd)
    files, notes = [], []
    for name, info in entries:
        if stat.S_ISREG(info.st_mode):
            files.append(directory / name)
        elif stat.S_ISLNK(info.st_mode):
            notes.append(f"{directory / name}: a symbolic link, not followed")
        elif stat.S_ISDIR(info.st_mode):
            notes.append(f"{directory / name}/: a directory (telemetry events)")
        else:
            notes.append(f"{directory / name}: not a regular file, not read")
    return files, notes


@attrs.define
class Follower:
    """Polls files for what is appended; a file replaced (rotated, moved away and made
    anew) or truncated is read again from its start."""

    write: Callable[[Path, bytes], None]
    positions: dict[Path, tuple[int, int]] = attrs.field(factory=dict)

    def watch(self, path: Path, inode: int, offset: int) -> None:
        self.positions[path] = (inode, offset)

    def poll(self) -> None:
        for path, (inode, offset) in list(self.positions.items()):
            try:
                with open_regular(path) as file:
                    if file.info.st_ino != inode or file.size < offset:
                        inode, offset = file.info.st_ino, 0
                    size = min(file.size, offset + TAIL_CAP)
                    data = os.pread(file.fd, size - offset, offset) if size > offset else b""
            except (FileNotFoundError, UnsafeFileError):
                continue  # moved away and not made anew yet, or a link now: nothing to show
            if data:
                self.write(path, data)
            self.positions[path] = (inode, offset + len(data))

    def run(self, every: float = 0.5) -> None:
        """Poll until interrupted (KeyboardInterrupt is the caller's)."""
        while True:
            time.sleep(every)
            self.poll()
