"""Running a script: its own process group, output to files, tails for the status.

The command runs as `/bin/sh -c COMMAND` (or another shell) in the handler's run dir (or
a given working dir), in a new session (so its whole group can be signalled), stdin on
/dev/null and stdout/stderr appended to the `stdout` and `stderr` files of the run dir.
The identity of its group leader (pid, start time, boot id) goes to the `pid` file there
so that disable and uninstall can stop a script that another process is still running,
and never a process that merely got the same pid later (after a reboot, or once the
script is gone). With an `Account`, the command runs as that user (uid, gid and
supplementary groups); the run dir's files stay the handler's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import attrs
from exthandler_sdk.files import write_atomic
from exthandler_sdk.procs import identify, read_identity, still_running

__all__ = [
    "Account",
    "PID_FILE",
    "STDERR_FILE",
    "STDOUT_FILE",
    "dos2unix",
    "kill_group",
    "start",
    "stop_recorded",
    "tail",
    "write_private",
]

STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
PID_FILE = "pid"
_BOM = b"\xef\xbb\xbf"
_TEXT_SNIFF = 8192


@attrs.frozen(kw_only=True)
class Account:
    """Whom a command runs as: user and group ids, supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def start(
    directory: Path,
    command: str,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    shell: str = "/bin/sh",
    account: Account | None = None,
) -> subprocess.Popen[bytes]:
    """Start `shell -c command` in `cwd` (default: `directory`), in a new session, as
    `account` when given, with its output going to the files of `directory`; record its
    group id there."""
    with (
        open(_private(directory / STDOUT_FILE), "ab") as out,
        open(_private(directory / STDERR_FILE), "ab") as err,
    ):
        process = subprocess.Popen(
            [shell, "-c", command],
            cwd=cwd if cwd is not None else directory,
            env=dict(env),
            user=None if account is None else account.uid,
            group=None if account is None else account.gid,
            extra_groups=None if account is None else account.groups,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )
    identity = identify(process.pid)
    try:
        if identity is not None:  # without procfs nothing could tell it from a later one
            data = identity.to_json().encode()
            write_atomic(directory / PID_FILE, data, mode=0o600, durable=False)
    except OSError:  # nobody could stop a script left running unrecorded and unawaited
        kill_group(process.pid)
        process.wait()
        raise
    return process


def _private(path: Path) -> int:
    """A descriptor for appending to `path`, created 0600 (the output may hold secrets)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, mode 0700 whatever the umask: a script to run, which
    may hold secrets, readable and runnable by its owner only."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o700)
    try:
        os.fchmod(fd, 0o700)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by someone else's group
        return False
    return True


async def wait_for_exit(
    process: subprocess.Popen[bytes],
    deadline: float,
    *,
    report: Callable[[], Awaitable[None]],
    every: float,
    poll: float = 0.05,
) -> int | None:
    """The process's exit status, or None when the monotonic `deadline` passed first;
    `report()` is awaited every `every` seconds while it runs."""
    next_report = time.monotonic() + every
    while True:
        returncode = process.poll()
        if returncode is not None:
            return exit_status(returncode)
        now = time.monotonic()
        if now >= deadline:
            return None
        if now >= next_report:
            next_report = now + every
            await report()
        await anyio.sleep(min(poll, max(0.0, deadline - now)))


def exit_status(returncode: int) -> int:
    """A shell-style exit status: the code, or 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def fresh_run_dir(root: Path, sequence_number: int) -> Path:
    """`root/<sequence_number>`, private (0700) and empty: the dirs above it are made
    private too, and what an earlier, failed attempt of this sequence number left there
    (its recorded process group included) is stopped and removed first."""
    for path in (root.parent, root):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    directory = root / str(sequence_number)
    if directory.exists():
        stop_recorded(directory)
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def stop_recorded(directory: Path) -> bool:
    """Kill the group recorded in `directory/pid` if its leader is still the very process
    that was started (for disable, uninstall and a new run); the record is then removed.

    A record that names no process identity (garbage, or a bare pid as older versions
    wrote) is only removed: the pid may belong to anybody by now.
    """
    path = directory / PID_FILE
    identity = read_identity(path)
    stopped = identity is not None and still_running(identity) and kill_group(identity.pid)
    with contextlib.suppress(OSError):
        path.unlink()
    return stopped


def tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a file as text ('' when missing)."""
    try:
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - limit))
            data = stream.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def dos2unix(data: bytes) -> bytes:
    """CRLF -> LF and no UTF-8 BOM, for text; binary data (a NUL early on) is unchanged."""
    if b"\0" in data[:_TEXT_SNIFF]:
        return data
    data = data.removeprefix(_BOM)
    return data.replace(b"\r\n", b"\n")
