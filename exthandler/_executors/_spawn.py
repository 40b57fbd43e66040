"""Starting a command in its own session, waiting for it, and ending its process group.

The command's output goes to anonymous files, not pipes: an enable commonly starts a
daemon that inherits stdout, and a pipe would then never reach end-of-file. Only the
direct child is awaited; a daemon it leaves behind keeps running. When the wait ends
early (timeout, cancellation) the whole group gets SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import anyio

__all__ = ["GROUP_POLL", "child_umask", "group_alive", "signal_group", "spawn", "wait"]

GROUP_POLL = 0.05
"""Seconds between checks whether a terminated process group is empty."""


_TMPFILE: int | None = getattr(os, "O_TMPFILE", None)


def _capture_file(directory: Path) -> IO[bytes]:
    """An anonymous file for a command's output: in the handler dir, as the reference
    agent keeps them (so that output lands on the disk the extension lives on, whatever
    the system's temporary directory is), else in the temporary directory.

    An `O_TMPFILE` open has no name to race for and nothing to unlink: one syscall, where
    `tempfile` checks its arguments and tries names. Where the kernel or file system lacks
    it, `tempfile` does the same with a name it unlinks at once."""
    if _TMPFILE is not None:
        flags = os.O_RDWR | os.O_EXCL | os.O_CLOEXEC | _TMPFILE
        try:
            fd = os.open(directory, flags, 0o600)
        except OSError:
            pass  # no O_TMPFILE on this file system: tempfile tries names instead
        else:
            return open(fd, "w+b")
    import tempfile  # only here: its import costs more than most commands' whole capture

    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError:
        return tempfile.TemporaryFile()


def spawn(
    argv: list[str], cwd: Path, env: Mapping[str, str]
) -> tuple[IO[bytes], IO[bytes], subprocess.Popen[bytes] | OSError]:
    """Open the capture files and start the command in a new session (blocking I/O); the
    OSError that kept it from starting stands in for the process."""
    out = _capture_file(cwd)
    err = _capture_file(cwd)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=env,
            start_new_session=True,
            umask=child_umask(),
        )
    except OSError as exc:
        return out, err, exc
    return out, err, process


def child_umask() -> int:
    """The umask commands run under: the runtime's, but never looser than 022.

    A runtime started with umask 000 (a bad unit file or shell) must not hand it on:
    the files an extension creates in its handler dir, where root runs scripts from,
    would be writable by everyone. 022 is what a service manager gives by default.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) | 0o022
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


async def _exited(child: subprocess.Popen[bytes], pidfd: int | None) -> int:
    """Wait for the child to exit and reap it; its return code."""
    if pidfd is not None:
        await anyio.wait_readable(pidfd)  # a pidfd becomes readable when the child exits
        return child.wait()
    delay = 0.001
    while (code := child.poll()) is None:  # without a pidfd there is nothing to wait on
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return code


def _pidfd(child: subprocess.Popen[bytes]) -> int | None:
    try:
        return os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # not Linux 5.3+: poll instead
        return None


async def wait(
    child: subprocess.Popen[bytes],
    *,
    limit: float,
    grace: float,
    on_running: Callable[[], None] | None = None,
    running_after: float = 0.0,
) -> int | None:
    """The child's return code, or None when it outlived `limit` seconds and was killed.

    `on_running` is called once if the child still runs `running_after` seconds in (not
    at all if it ended before). Whatever ends the wait early (timeout, cancellation, any
    exception, one raised by `on_running` too) the process group is terminated under a
    shield, so a cancelled runtime leaves no command behind.
    """
    returncode: int | None = None
    pidfd = _pidfd(child)
    try:
        with anyio.move_on_after(limit):
            if on_running is not None:
                with anyio.move_on_after(running_after):
                    returncode = await _exited(child, pidfd)
                if returncode is None:
                    on_running()
            if returncode is None:
                returncode = await _exited(child, pidfd)
    finally:
        with anyio.CancelScope(shield=True):
            if returncode is None:
                await _terminate(child, pidfd, grace)
        if pidfd is not None:
            os.close(pidfd)
    return returncode


async def _terminate(child: subprocess.Popen[bytes], pidfd: int | None, grace: float) -> None:
    """SIGTERM the process group, give it `grace` seconds to go, then SIGKILL what is left."""
    group = child.pid  # the child leads its own session, so its pid is the group id
    signal_group(group, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await _exited(child, pidfd)
        # Nothing signals when the last member of a group exits: poll for it.
        while group_alive(group):  # noqa: ASYNC110
            await anyio.sleep(GROUP_POLL)
        return  # all gone within the grace: nothing left to kill
    signal_group(group, signal.SIGKILL)
    await _exited(child, pidfd)


def signal_group(group: int, signum: signal.Signals) -> None:
    """Send `signum` to every process of `group` (nothing if the group is gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def group_alive(group: int) -> bool:
    """Whether a process of `group` still runs.

    Zombies do not count: orphans wait for init to reap them, and a slow init (common in
    containers) would otherwise make every termination last the whole grace period.
    """
    entries: list[str] = []
    with contextlib.suppress(OSError):
        entries = os.listdir("/proc")
    # Without procfs, trust kill(): the wait then lasts until the group is reaped.
    return not entries or any(_runs_in_group(name, group) for name in entries if name.isdigit())


def _runs_in_group(pid: str, group: int) -> bool:
    """Whether /proc/<pid> is a live (not zombie) member of `group`."""
    stat = b""
    with contextlib.suppress(OSError):  # it may have exited since the listing
        stat = Path("/proc", pid, "stat").read_bytes()
    # Fields after the parenthesised command name: state, ppid, pgrp, ...
    fields = stat.rpartition(b")")[2].split()
    return len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == group
