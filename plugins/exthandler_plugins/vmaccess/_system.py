"""The machine's own tools and account files, as VM Access uses them.

Tools are looked up on a fixed system PATH (never the caller's) and run with a minimal
environment, stdin empty or holding the one input they read (`chpasswd`: a password
travels only there, never in arguments, which every user can read). Account files are
read with a cap and without following a link at their own name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread
from exthandler_sdk import ErrorCode, HandlerError

__all__ = [
    "TOOL_PATH",
    "ToolError",
    "UnsafeFileError",
    "login_defs_int",
    "lookup_user",
    "read_file",
    "run_tool",
    "shadow_password",
    "tool",
]

TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where the system tools are looked for, whatever PATH the handler was started with."""
TOOL_TIMEOUT = 120.0
"""Seconds a tool may run before it is killed and the step fails."""
OUTPUT_LIMIT = 2000
"""Characters of a failing tool's output quoted in the error."""
FILE_LIMIT = 1024 * 1024
"""The most read of any system file (account database, sshd_config, sudoers drop-in)."""
LOGIN_DEFS = Path("/etc/login.defs")
SHADOW = Path("/etc/shadow")


class ToolError(HandlerError):
    """A system tool failed (code 1), or is not installed (52)."""


class UnsafeFileError(OSError):
    """A file that is a link, not a regular file, has other names, or is too large."""


def tool(name: str) -> str | None:
    """The path of system tool `name`, or None."""
    return shutil.which(name, path=TOOL_PATH)


async def run_tool(
    name: str, args: Sequence[str], *, stdin: bytes | None = None, secret: str | None = None
) -> str:
    """Run tool `name` with `args`; its stdout. ToolError on failure, quoting its output
    with `secret` (if it could echo it) replaced."""
    path = tool(name)
    if path is None:
        raise ToolError(
            int(ErrorCode.MISSING_DEPENDENCY), f"{name} is not installed (looked in {TOOL_PATH})"
        )
    command = [path, *args]
    shown = " ".join([name, *args])
    try:
        # subprocess.run in a thread, not anyio.run_process: a tool that exits without
        # reading its stdin must be a failed tool, not a broken pipe in a task group.
        result = await anyio.to_thread.run_sync(functools.partial(_run, command, stdin))
    except subprocess.TimeoutExpired:
        raise ToolError(1, f"{shown} did not finish within {TOOL_TIMEOUT:g} seconds") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        if secret:
            output = output.replace(secret, "<redacted>")
        if len(output) > OUTPUT_LIMIT:
            output = "..." + output[-OUTPUT_LIMIT:]
        code = result.returncode if result.returncode > 0 else 128 - result.returncode
        raise ToolError(1, f"{shown} failed with exit code {code}: {output}")
    return result.stdout.decode(errors="replace")


def _run(command: list[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env={"PATH": TOOL_PATH, "LC_ALL": "C"},
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def lookup_user(name: str) -> pwd.struct_passwd | None:
    """The account `name`, as the system's name service knows it, or None."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def read_file(path: Path | str, *, dir_fd: int | None = None, single: bool = False) -> bytes:
    """The bytes of the regular file `path` (not a link) of at most `FILE_LIMIT` bytes;
    FileNotFoundError if missing, UnsafeFileError for anything else. With `single`, a file
    with more than one name (a hard link planted to make us read another file) is refused.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(errno.ELOOP, "a symbolic link", os.fspath(path)) from None
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(errno.EINVAL, "not a regular file", os.fspath(path))
        if single and info.st_nlink != 1:
            raise UnsafeFileError(errno.EMLINK, f"has {info.st_nlink} hard links", os.fspath(path))
        data = file.read(FILE_LIMIT + 1)
    if len(data) > FILE_LIMIT:
        raise UnsafeFileError(errno.EFBIG, f"larger than {FILE_LIMIT} bytes", os.fspath(path))
    return data


def login_defs_int(key: str, default: int) -> int:
    """An integer setting of /etc/login.defs (`UID_MIN`, ...), or `default`."""
    try:
        text = read_file(LOGIN_DEFS).decode(errors="replace")
    except OSError:
        return default
    value = default
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == key:
            with contextlib.suppress(ValueError):
                value = int(fields[1], 0)
    return value


def shadow_password(name: str) -> str | None:
    """The password field of `name` in /etc/shadow, or None when it has no line there."""
    try:
        text = read_file(SHADOW).decode(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 2 and fields[0] == name:
            return fields[1]
    return None
