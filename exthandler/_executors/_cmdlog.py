"""CommandExecution.log: an entry per command, and the output tails it keeps.

An entry names the command, its protocol variables (never the rest of the environment:
it may hold secrets), how it ended and the tail of each output stream. The log is rotated
to `<name>.1` when it would outgrow its limit.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from exthandler_sdk import Operation

from .._fs import ensure_dir, open_append
from .._values import Value

__all__ = [
    "INLINE_COLLECT",
    "LogRecord",
    "append_entry",
    "captured",
    "collect",
    "outcome_line",
    "title",
]

_logger = logging.getLogger(__name__)

_LOG_OUTPUT_LIMIT = 256 * 1024
"""Bytes of each of stdout and stderr written to CommandExecution.log (the tail)."""

INLINE_COLLECT = 64 * 1024
"""Bytes of output read on the event loop rather than in a thread."""


def title(operation: Operation) -> str:
    """`Enable` for Operation.ENABLE (spelled out: a str enum's `title` is str.title)."""
    return operation.value.capitalize()


def outcome_line(
    exit_code: int | None, *, timed_out: bool, timeout: float, hint: str | None
) -> str:
    """The `result:` line of an entry."""
    if timed_out:
        text = f"timed out after {timeout:g} s; process group killed"
    elif exit_code is None:
        text = "not started"
    else:
        text = f"exit code {exit_code}"
    return f"{text} ({hint})" if hint else text


class LogRecord(Value):
    """What CommandExecution.log says about one command, besides its output.

    `env` holds only what may be logged: the protocol variables.
    """

    started: dt.datetime
    operation: Operation
    command_line: str
    env: Mapping[str, str]
    outcome: str
    duration: float


def _read_tail(file: IO[bytes], limit: int) -> tuple[bytes, int]:
    """The last `limit` bytes of `file`, and its whole size."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - limit))
    return file.read(limit), size


def captured(*streams: IO[bytes]) -> int:
    """How many bytes the capture files hold."""
    return sum(os.fstat(stream.fileno()).st_size for stream in streams)


def collect(
    out: IO[bytes],
    err: IO[bytes],
    record: LogRecord,
    log_file: Path | None,
    log_limit: int,
    keep: int,
) -> tuple[str, str]:
    """Read the output tails (at least `keep` bytes of each), append the log entry, and
    return the tails decoded (blocking I/O)."""
    need = max(keep, _LOG_OUTPUT_LIMIT) if log_file is not None else keep
    stdout, stdout_size = _read_tail(out, need)
    stderr, stderr_size = _read_tail(err, need)
    stdout_text = stdout.decode("utf-8", "replace")
    stderr_text = stderr.decode("utf-8", "replace")
    if log_file is not None:
        append_entry(
            log_file,
            record,
            log_limit,
            ("stdout", stdout_text, stdout_size, len(stdout)),
            ("stderr", stderr_text, stderr_size, len(stderr)),
        )
    return stdout_text, stderr_text


def append_entry(
    log_file: Path, record: LogRecord, limit: int, *streams: tuple[str, str, int, int]
) -> None:
    """Append the entry of `record` with its output `streams` (name, tail, size, bytes
    kept); failures to write are logged, not raised."""
    try:
        _append_log(log_file, _log_entry(record, *streams).encode("utf-8", "replace"), limit)
    except OSError as exc:
        _logger.warning("could not write %s: %s", log_file, exc)


def _log_entry(record: LogRecord, *streams: tuple[str, str, int, int]) -> str:
    """One CommandExecution.log entry."""
    stamp = record.started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = [
        f"===== {stamp} {title(record.operation)}",
        f"command: {record.command_line}",
    ]
    lines += [f"env: {name}={record.env[name]}" for name in sorted(record.env)]
    lines += [f"result: {record.outcome}", f"duration: {record.duration:.3f} s"]
    for name, text, size, kept in streams:
        cut = f" (last {kept} of {size} bytes)" if kept < size else ""
        lines += [f"[{name}]{cut}", text.rstrip("\n")]
    return "\n".join(lines) + "\n\n"


def _append_log(log_file: Path, data: bytes, limit: int) -> None:
    """Append `data`, first rotating the log to `<name>.1` if it would grow past `limit`.

    The handler can write in its log dir: a link or FIFO it put in place of the dir or
    of the log is replaced, never written through (the dir is made 0755, the log 0600).
    """
    name, rotated = log_file.name, log_file.name + ".1"
    dir_fd, _ = ensure_dir(log_file.parent, 0o755)
    try:
        fd, size = open_append(name, 0o600, dir_fd=dir_fd)
        if size and size + len(data) > limit:
            os.close(fd)
            os.replace(name, rotated, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            fd, _ = open_append(name, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
