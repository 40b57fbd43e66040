"""Who a recorded process is: pid, start time and boot id, so that a stale record (the
process exited, the machine rebooted, the pid was reused) never gets a signal.

A pid alone names whatever process holds that number now. Paired with the process's start
time (clock ticks since boot, field 22 of /proc/<pid>/stat) and the kernel's boot id, it
names one process of one boot: the runtime's orphan handling and CustomScript's pid file
both record a `ProcessIdentity` and act only while `still_running` says it is that process.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path

from ._values import Value

__all__ = [
    "BOOT_ID_PATH",
    "ProcessIdentity",
    "identify",
    "read_boot_id",
    "read_identity",
    "read_record",
    "start_time",
    "still_running",
]

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
"""The kernel's boot id: a new one after every boot."""

_STAT_LIMIT = 4096
"""Bytes read at most from /proc/<pid>/stat (52 numeric fields and a 16-byte name)."""

_RECORD_LIMIT = 4096
"""Bytes read at most from a record file (a valid one is well under 200)."""


class ProcessIdentity(Value):
    """One process of one boot: its pid, its start time in clock ticks, the boot id."""

    pid: int
    start: str
    boot: str

    def to_json(self) -> str:
        """The record written to a marker or pid file (read back by `parse`)."""
        return json.dumps({"pid": self.pid, "start": self.start, "boot": self.boot})

    @classmethod
    def parse(cls, data: bytes | str) -> ProcessIdentity | None:
        """The identity a record names, or None when it names none (empty, garbage, a bare
        pid without start time or boot id, a pid that cannot be a process group)."""
        try:
            document = json.loads(data)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        pid, start, boot = document.get("pid"), document.get("start"), document.get("boot")
        if type(pid) is not int or pid <= 1 or not isinstance(start, str) or not start:
            return None
        if not isinstance(boot, str) or not boot:
            return None
        return cls(pid=pid, start=start, boot=boot)


def start_time(pid: int) -> str | None:
    """When `pid` started, in clock ticks since boot (None when there is no such process)."""
    # One open and one read: the whole record fits in a page, and a buffered file object
    # would cost more than the read (this runs after every command is spawned).
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _STAT_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) is in parentheses and may hold spaces or parentheses:
    # fields are counted after the last ')'. Field 3 (state) is then index 0, field 22 is 19.
    fields = data.rpartition(b")")[2].split()
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else None


def read_boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """The boot id in `path` (the kernel's by default), or None when it cannot be read."""
    if path == BOOT_ID_PATH:
        return _kernel_boot_id()
    return _read_boot_id(path)


@functools.cache
def _kernel_boot_id() -> str | None:
    """The kernel's boot id, read once: it cannot change while this process lives."""
    return _read_boot_id(BOOT_ID_PATH)


def _read_boot_id(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            text = file.read(_RECORD_LIMIT).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text or None


def identify(pid: int, *, boot_id_path: Path = BOOT_ID_PATH) -> ProcessIdentity | None:
    """The identity of the live (or not yet reaped) process `pid`; None when unknowable."""
    start = start_time(pid)
    boot = read_boot_id(boot_id_path)
    if start is None or boot is None:
        return None
    return ProcessIdentity(pid=pid, start=start, boot=boot)


def still_running(identity: ProcessIdentity, *, boot_id_path: Path = BOOT_ID_PATH) -> bool:
    """Whether `identity`'s pid still names that very process (same boot, same start)."""
    return identify(identity.pid, boot_id_path=boot_id_path) == identity


def read_identity(path: Path) -> ProcessIdentity | None:
    """The identity recorded in the file `path`, or None.

    The file may sit where a handler's own code can write: it is read as `read_record`
    reads it.
    """
    data = read_record(path)
    return None if data is None else ProcessIdentity.parse(data)


def read_record(path: Path) -> bytes | None:
    """The bytes of the record file `path`, or None when it is not a readable regular
    file of at most 4 KiB: it is opened without following a link or blocking on a fifo,
    and read with a cap."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    data = b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while len(data) <= _RECORD_LIMIT and (chunk := os.read(fd, _RECORD_LIMIT + 1)):
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if len(data) > _RECORD_LIMIT else data
