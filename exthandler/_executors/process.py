"""Running a classic package's HandlerManifest commands the way the reference agent does.

A command runs as `/bin/sh -c <handler_dir>/<command>` in its own session, with stdin from
/dev/null and its output going to temporary *files*: an enable commonly starts a daemon that
inherits stdout, and a pipe would then never reach end-of-file. Only the direct child is
awaited; a daemon it leaves behind keeps running. On timeout, or when the surrounding scope
is cancelled, the whole process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread
import attrs
from exthandler_sdk import Operation
from exthandler_sdk.procs import BOOT_ID_PATH, identify, read_identity, still_running
from exthandler_sdk.protocol import EXCERPT_LIMIT, PROTOCOL_VARIABLES, format_excerpt

__all__ = [
    "CommandResult",
    "base_environment",
    "clear_marker",
    "is_protocol_variable",
    "end_orphans",
    "run_command",
    "write_log_entry",
]

_logger = logging.getLogger(__name__)

_PROTOCOL_PREFIX = "AZURE_GUEST_AGENT_"

_LOG_OUTPUT_LIMIT = 256 * 1024
"""Bytes of each of stdout and stderr written to CommandExecution.log (the tail)."""

_GROUP_POLL = 0.05
"""Seconds between checks whether a terminated process group is empty."""


def is_protocol_variable(name: str) -> bool:
    """Whether `name` belongs to the protocol (the only variables ever logged)."""
    return name in PROTOCOL_VARIABLES or name.startswith(_PROTOCOL_PREFIX)


@attrs.frozen(kw_only=True)
class CommandResult:
    """What happened when a manifest command ran.

    `exit_code` is None when nothing ran (no command, or it could not be started) or when
    the command was killed on timeout; a death by signal N is reported as 128 + N, as a
    shell would. `excerpt` is the reference agent's `[stdout]...[stderr]...` tail, and
    `timeout` the limit the command ran under.
    """

    operation: Operation
    command: str
    exit_code: int | None
    timed_out: bool = False
    duration: float = 0.0
    excerpt: str = ""
    hint: str | None = None
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One human line: what happened, and the likely cause when one is known."""
        title = _title(self.operation)
        if self.timed_out:
            after = self.timeout if self.timeout is not None else self.duration
            text = f"{title} timed out after {after:g} s and was killed"
        elif self.exit_code is None:
            if self.command.strip():
                text = f"{title} could not be started"
            else:
                text = f"{title} has no command ({self.operation.manifest_key}); nothing was run"
        elif self.exit_code == 0:
            text = f"{title} succeeded"
        else:
            text = f"{title} failed: exit code {self.exit_code}"
        return f"{text} ({self.hint})" if self.hint else text


def _title(operation: Operation) -> str:
    """`Enable` for Operation.ENABLE (spelled out: a str enum's `title` is str.title)."""
    return operation.value.capitalize()


def base_environment() -> dict[str, str]:
    """The runtime's environment without any protocol variable: what every command gets
    before its own variables.

    Removing them means an update-only variable never leaks into another command from
    the runtime's own environment.
    """
    return {name: value for name, value in os.environ.items() if not is_protocol_variable(name)}


def _child_environment(env: Mapping[str, str], base: Mapping[str, str] | None) -> dict[str, str]:
    """`base` (by default the runtime's environment, see `base_environment`), then `env`."""
    child = dict(base) if base is not None else base_environment()
    child.update(env)
    return child


async def run_command(
    *,
    handler_dir: Path,
    command: str,
    operation: Operation,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the command's limit: it is killed, the caller is not
    grace: float = 5.0,
    log_file: Path | None = None,
    log_limit: int = 10 * 1024 * 1024,
    marker: Path | None = None,
    base_env: Mapping[str, str] | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
) -> CommandResult:
    """Run a manifest command in `handler_dir` and report how it ended.

    `marker`, when given, names the command's process group for as long as it runs, so
    that a runtime killed meanwhile can end the orphan on its next start (`end_orphans`,
    given the same `boot_id_path`); afterwards it is left empty for the caller's next
    command (see `clear_marker`).
    `base_env` is the environment the command starts from (see `base_environment`; a
    caller running many commands computes it once).

    `env` holds the protocol variables for this command (PROTOCOL.md section 4). Failures
    of the command are results, not exceptions; a cancellation of the caller's scope kills
    the command's process group and propagates.
    """
    relative = command.strip().lstrip("/")
    if not relative:
        return CommandResult(operation=operation, command=command, exit_code=None)
    # Quoting changes nothing for an ordinary path and keeps one with spaces in one word.
    command_line = f"{shlex.quote(str(handler_dir))}/{relative}"
    child_env = _child_environment(env, base_env)
    started = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    argv = ["/bin/sh", "-c", command_line]
    out = err = None
    try:
        # On the event loop, although it blocks until the child has exec'd: CPython holds
        # the GIL through fork and exec, so a worker thread would block the loop as much
        # and add a hand-off to each command.
        out, err, child = _spawn(argv, handler_dir, child_env, marker, boot_id_path)
        if isinstance(child, OSError):
            returncode: int | None = None
            timed_out = False
            hint: str | None = f"could not start /bin/sh in {handler_dir}: {child}"
        else:
            try:
                returncode = await _wait(child, limit=timeout, grace=grace)
            finally:
                if marker is not None:  # one syscall: not worth a thread, even when cancelled
                    # Emptied, not removed: the handler's next command reuses the file
                    # (creating files is the dear part on some disks); an empty marker
                    # names nothing, and its owner removes it when done (`clear_marker`).
                    with contextlib.suppress(FileNotFoundError):
                        os.truncate(marker, 0)
            timed_out = returncode is None
            hint = _hint(returncode, handler_dir, relative)
        duration = time.monotonic() - start
        exit_code = (
            None if returncode is None else (128 - returncode if returncode < 0 else returncode)
        )
        record = _Record(
            started=started,
            operation=operation,
            command_line=f"/bin/sh -c {command_line}",
            env=child_env,
            outcome=_outcome(exit_code, timed_out=timed_out, timeout=timeout, hint=hint),
            duration=duration,
        )
        if _captured(out, err) <= _INLINE_COLLECT:
            # The usual case: little output. Reading it here is cheaper than a thread hop.
            excerpt = _collect(out, err, record, log_file, log_limit)
        else:
            excerpt = await anyio.to_thread.run_sync(
                _collect, out, err, record, log_file, log_limit, abandon_on_cancel=False
            )
    finally:
        for stream in (out, err):
            if stream is not None:
                stream.close()
    return CommandResult(
        operation=operation,
        command=command,
        exit_code=exit_code,
        timed_out=timed_out,
        duration=duration,
        excerpt=excerpt,
        hint=hint,
        timeout=timeout,
    )


def _capture_file(directory: Path) -> IO[bytes]:
    """An anonymous file for a command's output: in the handler dir, as the reference
    agent keeps them (so that output lands on the disk the extension lives on, whatever
    the system's temporary directory is), else in the temporary directory."""
    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError:
        return tempfile.TemporaryFile()


def _spawn(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    marker: Path | None = None,
    boot_id_path: Path = BOOT_ID_PATH,
) -> tuple[IO[bytes], IO[bytes], subprocess.Popen[bytes] | OSError]:
    """Open the capture files, start the command in a new session and, if asked, write
    the marker naming its process group (blocking I/O)."""
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
    if marker is not None:
        _write_marker(marker, process.pid, boot_id_path)
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


def _write_marker(marker: Path, pid: int, boot_id_path: Path = BOOT_ID_PATH) -> None:
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
                _signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while _group_alive(pid) and time.monotonic() < deadline:
                    time.sleep(_GROUP_POLL)
                if _group_alive(pid):
                    _signal_group(pid, signal.SIGKILL)
                ended.append(f"ended process group {pid} left running by a stopped runtime")
        with contextlib.suppress(OSError):
            marker.unlink()
    return ended


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


async def _wait(child: subprocess.Popen[bytes], *, limit: float, grace: float) -> int | None:
    """The child's return code, or None when it outlived `limit` seconds and was killed.

    Whatever ends the wait early (timeout, cancellation, any exception) the process group
    is terminated under a shield, so a cancelled runtime leaves no command behind.
    """
    returncode: int | None = None
    pidfd = _pidfd(child)
    try:
        with anyio.move_on_after(limit):
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
    _signal_group(group, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await _exited(child, pidfd)
        # Nothing signals when the last member of a group exits: poll for it.
        while _group_alive(group):  # noqa: ASYNC110
            await anyio.sleep(_GROUP_POLL)
        return  # all gone within the grace: nothing left to kill
    _signal_group(group, signal.SIGKILL)
    await _exited(child, pidfd)


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
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


def _hint(returncode: int | None, handler_dir: Path, relative: str) -> str | None:
    """The likely cause of an unusual ending, from facts we can check afterwards."""
    if returncode is None:
        return None
    if returncode < 0:
        return f"killed by signal {_signal_name(-returncode)}"
    if 128 < returncode < 128 + signal.NSIG:
        # How a shell reports a child killed by a signal (/bin/sh forks the command).
        return f"probably killed by signal {_signal_name(returncode - 128)}"
    if returncode not in (126, 127):
        return None
    # The program is the command's first word (the rest are its arguments).
    script = handler_dir / relative.split()[0]
    return exec_hint(returncode, script, handler_dir=handler_dir, noexec=_on_noexec(handler_dir))


def _on_noexec(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:  # e.g. an uninstall that removed its own directory
        return False


def exec_hint(exit_code: int, script: Path, *, handler_dir: Path, noexec: bool) -> str | None:
    """Why `/bin/sh` may have exited 126 (cannot execute) or 127 (not found).

    None when nothing explains it: the program itself may have chosen that exit code.
    """
    if not script.exists():
        return f"command not found in the package: {script}"
    if exit_code == 126 and noexec:
        return f"the handler directory {handler_dir} is on a filesystem mounted noexec"
    if script.is_dir():
        return f"{script} is a directory, not a program"
    if not os.access(script, os.X_OK):
        return f"{script} is not executable (it lacks the exec permission bit)"
    interpreter = _interpreter(script) if exit_code == 127 else None
    if interpreter and not os.access(interpreter, os.X_OK):
        return f"the interpreter of {script} is missing: {interpreter}"
    return None


def _interpreter(script: Path) -> str | None:
    """The program named by a `#!` line, if the script starts with one."""
    first = b""
    with contextlib.suppress(OSError), script.open("rb") as file:
        first = file.readline(256)
    words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
    return words[0] if words else None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # e.g. a real-time signal other than SIGRTMIN/SIGRTMAX
        return str(signum)


def _outcome(exit_code: int | None, *, timed_out: bool, timeout: float, hint: str | None) -> str:
    if timed_out:
        text = f"timed out after {timeout:g} s; process group killed"
    elif exit_code is None:
        text = "not started"
    else:
        text = f"exit code {exit_code}"
    return f"{text} ({hint})" if hint else text


@attrs.frozen(kw_only=True)
class _Record:
    """What CommandExecution.log says about one command, besides its output."""

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


_INLINE_COLLECT = 64 * 1024  # bytes of output read on the event loop rather than in a thread


def _captured(*streams: IO[bytes]) -> int:
    """How many bytes the capture files hold."""
    return sum(os.fstat(stream.fileno()).st_size for stream in streams)


def _collect(
    out: IO[bytes], err: IO[bytes], record: _Record, log_file: Path | None, log_limit: int
) -> str:
    """Read the output tails, append the log entry, and return the excerpt (blocking I/O)."""
    # Each character takes at most 4 bytes of UTF-8, so this many bytes always suffice.
    need = _LOG_OUTPUT_LIMIT if log_file is not None else EXCERPT_LIMIT * 4
    stdout, stdout_size = _read_tail(out, need)
    stderr, stderr_size = _read_tail(err, need)
    stdout_text = stdout.decode("utf-8", "replace")
    stderr_text = stderr.decode("utf-8", "replace")
    if log_file is not None:
        entry = _log_entry(
            record,
            ("stdout", stdout_text, stdout_size, len(stdout)),
            ("stderr", stderr_text, stderr_size, len(stderr)),
        )
        try:
            _append_log(log_file, entry.encode("utf-8", "replace"), log_limit)
        except OSError as exc:
            _logger.warning("could not write %s: %s", log_file, exc)
    return format_excerpt(stdout_text, stderr_text)


def _log_entry(record: _Record, *streams: tuple[str, str, int, int]) -> str:
    """One CommandExecution.log entry. Only protocol variables are written: the rest of
    the environment may hold secrets."""
    stamp = record.started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = [
        f"===== {stamp} {_title(record.operation)}",
        f"command: {record.command_line}",
    ]
    lines += [
        f"env: {name}={record.env[name]}"
        for name in sorted(record.env)
        if is_protocol_variable(name)
    ]
    lines += [f"result: {record.outcome}", f"duration: {record.duration:.3f} s"]
    for name, text, size, kept in streams:
        cut = f" (last {kept} of {size} bytes)" if kept < size else ""
        lines += [f"[{name}]{cut}", text.rstrip("\n")]
    return "\n".join(lines) + "\n\n"


def write_log_entry(
    log_file: Path,
    *,
    started: dt.datetime,
    operation: Operation,
    command_line: str,
    env: Mapping[str, str],
    outcome: str,
    duration: float,
    limit: int = 10 * 1024 * 1024,
) -> None:
    """Append a CommandExecution.log entry for a command that has no output to keep
    (an in-process handler); failures to write are logged, not raised."""
    record = _Record(
        started=started,
        operation=operation,
        command_line=command_line,
        env=env,
        outcome=outcome,
        duration=duration,
    )
    try:
        _append_log(log_file, _log_entry(record).encode("utf-8", "replace"), limit)
    except OSError as exc:
        _logger.warning("could not write %s: %s", log_file, exc)


def _append_log(log_file: Path, data: bytes, limit: int) -> None:
    """Append `data`, first rotating the log to `<name>.1` if it would grow past `limit`.

    The handler can write in its log dir: a link or FIFO it put in place of the dir or
    of the log is replaced, never written through (the dir is made 0755, the log 0600).
    """
    from .._fs import ensure_dir, open_append

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
