"""Markers naming the process group of each running command, and ending orphans.

A runtime killed while a command runs cannot end its process group; the marker it wrote
for the command lets the next runtime do it (once it has made sure the group leader is
the very process that was started: same boot, same start time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from exthandler_sdk.procs import BOOT_ID_PATH, identify, read_identity, still_running

from ._spawn import GROUP_POLL, group_alive, signal_group

__all__ = ["clear_marker", "end_orphans", "write_marker"]


def write_marker(marker: Path, pid: int, boot_id_path: Path = BOOT_ID_PATH) -> None:
    """Record who the group leader `pid` is; a process that cannot be identified (no
    procfs) is recorded as nothing, since it could not be told from a later one."""
    identity = identify(pid, boot_id_path=boot_id_path)
    document = (identity.to_json() if identity is not None else "").encode()
    # 0600 whatever the umask (it can only take bits away), and never through a link.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(marker, flags, 0o600)
    except FileNotFoundError:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(marker, flags, 0o600)
    try:
        os.write(fd, document)
    finally:
        os.close(fd)


def clear_marker(marker: Path) -> None:
    """Remove a marker that `run_command` left empty (when its owner runs no more)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)


def end_orphans(
    directory: Path, grace: float = 5.0, *, boot_id_path: Path = BOOT_ID_PATH
) -> list[str]:
    """End the process groups of commands a killed runtime left running (blocking).

    Each marker in `directory` names a group (an empty one names none); it is signalled
    only if its leader is the very process that was started (same boot, same start
    time): SIGTERM, then SIGKILL after `grace`. Every marker is then removed. Returns a
    line per group ended, for the runtime's log.
    """
    ended: list[str] = []
    for marker in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        identity = read_identity(marker)
        if identity is not None and still_running(identity, boot_id_path=boot_id_path):
            pid = identity.pid
            with contextlib.suppress(OSError):  # e.g. EPERM: not ours to end after all
                signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while group_alive(pid) and time.monotonic() < deadline:
                    time.sleep(GROUP_POLL)
                if group_alive(pid):
                    signal_group(pid, signal.SIGKILL)
                ended.append(f"ended process group {pid} left running by a stopped runtime")
        with contextlib.suppress(OSError):
            marker.unlink()
    return ended
