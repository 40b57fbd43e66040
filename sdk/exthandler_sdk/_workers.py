"""Background workers: processes that `enable` starts and that outlive its command.

`await ctx.start_worker(self.method)` runs `method(ctx)` of the handler in a process of
its own, `python -m exthandler_sdk worker MODULE:CLASS METHOD`, in a new session with its
standard streams on /dev/null and no other descriptor open. The same happens in process
and packaged: a runtime that embeds the handler may exit long before the worker does.

Launch: the `worker` command loads the class and checks the method (reporting a failure
on its standard error, which the launcher turns into `WorkerError`), then forks; the
child becomes the leader of a new session and process group, the parent prints the
child's pid and exits. The child is thus never a child of the launcher (no zombie in a
long-lived runtime). It then waits for the extension's run-once lock, which the launching
`enable` holds until it has written its own outcome: the worker's first status always
comes after it. Then it reads the settings of its sequence number and calls the method
with a `Context` of its own (`operation` enable, `detached` true, no deadline).

Record: `<config>/.exthandler-sdk.worker-<METHOD>.pid` (`.exthandler-sdk.<ext>.worker-...`
for a multi-config extension), the worker's `ProcessIdentity` and its sequence number,
written by the launcher. A start for the same method stops a running worker of another
sequence number first and keeps one of the same sequence number; `disable` and
`uninstall` stop all of the extension's workers before the handler's method runs; after
a reboot the record names a process of another boot, so the next `enable` starts afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ExtHandlerError
from ._procs import ProcessIdentity, identify, read_record, still_running
from .protocol import Variable

__all__ = ["WorkerError", "WorkerRecords", "main_worker"]

STOP_GRACE = 10.0
"""Seconds a worker has to exit after SIGTERM before its process group gets SIGKILL."""
_KILL_WAIT = 5.0
_POLL = 0.05
_LAUNCH_TIMEOUT = 60.0
_OUTPUT_LIMIT = 4096
_USAGE = "usage: python -m exthandler_sdk worker MODULE:CLASS METHOD\n"


class WorkerError(ExtHandlerError, RuntimeError):
    """A background worker could not be started."""


def _state(pid: int) -> str | None:
    """The state letter of `pid` (field 3 of /proc/<pid>/stat), None without a process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data.rpartition(b")")[2].split()
    return fields[0].decode("ascii", "replace") if fields else None


def alive(identity: ProcessIdentity) -> bool:
    """Whether `identity` still names a process that runs (not a zombie awaiting its
    parent: an orphan's reaper may take its time, or never come)."""
    return still_running(identity) and _state(identity.pid) not in (None, "Z", "X")


@attrs.frozen(kw_only=True)
class WorkerRecord:
    """What a worker's pid file holds: who it is, and the sequence number it serves."""

    identity: ProcessIdentity
    method: str
    sequence: int

    def to_json(self) -> bytes:
        document = {
            **json.loads(self.identity.to_json()),
            "method": self.method,
            "sequence": self.sequence,
        }
        return json.dumps(document).encode("utf-8")


@attrs.define(eq=False)
class WorkerRecords:
    """The pid files of one extension's workers, in its config folder."""

    config_dir: Path
    extension: str | None

    @property
    def prefix(self) -> str:
        stem = ".exthandler-sdk" if self.extension is None else f".exthandler-sdk.{self.extension}"
        return f"{stem}.worker-"

    def path(self, method: str) -> Path:
        return self.config_dir / f"{self.prefix}{method}.pid"

    def read(self, method: str) -> WorkerRecord | None:
        """The record of `method`'s worker (None when absent or unusable)."""
        data = read_record(self.path(method))  # capped, no link followed, regular files only
        identity = None if data is None else ProcessIdentity.parse(data)
        if data is None or identity is None:
            return None
        document: Any = json.loads(data)  # parse() accepted it: a JSON object
        sequence = document.get("sequence")
        if type(sequence) is int and document.get("method") == method:
            return WorkerRecord(identity=identity, method=method, sequence=sequence)
        return None

    def write(self, record: WorkerRecord) -> None:
        from ._files import write_atomic

        write_atomic(self.path(record.method), record.to_json(), mode=0o600, durable=False)

    def forget(self, method: str, pid: int | None = None) -> None:
        """Remove `method`'s record (only if it names `pid`, when given)."""
        if pid is not None:
            record = self.read(method)
            if record is None or record.identity.pid != pid:
                return
        with contextlib.suppress(FileNotFoundError):
            self.path(method).unlink()

    def methods(self) -> list[str]:
        """The methods with a record (running or not)."""
        found: list[str] = []
        with contextlib.suppress(OSError):
            for entry in self.config_dir.iterdir():
                name = entry.name
                if name.startswith(self.prefix) and name.endswith(".pid"):
                    method = name[len(self.prefix) : -len(".pid")]
                    if method.isidentifier():
                        found.append(method)
        return sorted(found)

    async def stop(self, method: str) -> bool:
        """Stop `method`'s worker (SIGTERM to its process group, SIGKILL after
        `STOP_GRACE` seconds) and remove its record; whether one was running."""
        record = self.read(method)
        stopped = False
        if record is not None and alive(record.identity):
            await _terminate(record.identity)
            stopped = True
        self.forget(method)
        return stopped

    async def stop_all(self) -> list[str]:
        """Stop every worker of the extension; the methods whose worker was running."""
        return [method for method in self.methods() if await self.stop(method)]


async def _terminate(identity: ProcessIdentity) -> None:
    import anyio

    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, _KILL_WAIT)):
        if not alive(identity):
            return
        # The worker leads its own process group: what it started goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(identity.pid, sig)
        with anyio.move_on_after(wait):
            while alive(identity):  # noqa: ASYNC110 - another process: polled
                await anyio.sleep(_POLL)


def worker_spec(handler: object, method: str) -> str:
    """`MODULE:CLASS` of the handler instance whose `method` is to run in a worker."""
    cls = type(handler)
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise WorkerError(
            f"{cls.__qualname__} must be importable by name to run a worker "
            "(a class defined in a function or in a script run as __main__ is not)"
        )
    if not method.isidentifier() or method.startswith("_"):
        raise WorkerError(f"a worker runs a public method of the handler, not {method!r}")
    return f"{cls.__module__}:{cls.__qualname__}"


def _python_path() -> str:
    """This process's import path, for a worker that must import what it imports."""
    entries: list[str] = []
    for entry in sys.path:
        full = os.path.abspath(entry or os.curdir)
        if full not in entries:
            entries.append(full)
    return os.pathsep.join(entries)


def launch(
    spec: str, method: str, *, handler_dir: Path, env: Mapping[str, str], sequence: int
) -> ProcessIdentity:
    """Start the worker of `spec`'s `method` (blocking: run it in a thread) and return who
    it is once it waits for the run-once lock."""
    command = [sys.executable]
    if sys.flags.no_user_site:
        command.append("-s")
    command += ["-m", "exthandler_sdk", "worker", spec, method]
    environment = {**os.environ, **env}
    environment[Variable.SEQUENCE_NUMBER] = str(sequence)
    environment["PYTHONPATH"] = _python_path()
    try:
        result = subprocess.run(
            command,
            cwd=handler_dir,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            start_new_session=True,
            close_fds=True,
            timeout=_LAUNCH_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkerError(f"cannot start the worker {method}: {exc}") from exc
    reason = result.stderr[-_OUTPUT_LIMIT:].decode("utf-8", "replace").strip()
    words = result.stdout[:_OUTPUT_LIMIT].split()
    if result.returncode != 0 or len(words) != 1 or not words[0].isdigit():
        raise WorkerError(
            f"cannot start the worker {method}: "
            f"{reason or f'the launcher exited with {result.returncode}'}"
        )
    pid = int(words[0])
    identity = identify(pid)
    if identity is None:
        raise WorkerError(f"the worker {method} (pid {pid}) exited before it started")
    return identity


def _wait_for_enable(handler_dir: Path, config_dir: Path, extension: str | None) -> None:
    """Block until the enable that started this worker has released the run-once lock."""
    from ._runonce import RunOnce

    lock = RunOnce(handler_dir, config_dir, extension).lock_path
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # no enable ever held it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _detach_streams() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def main_worker(argv: list[str]) -> int:
    """`python -m exthandler_sdk worker MODULE:CLASS METHOD` in a handler dir."""
    from ._runner import HandlerLoadError, load_handler

    if len(argv) != 2:
        sys.stderr.write(_USAGE)
        return 2
    spec, method = argv
    try:
        handler_class = load_handler(spec)
    except HandlerLoadError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if not method.isidentifier() or not callable(getattr(handler_class, method, None)):
        sys.stderr.write(f"error: {spec} has no method {method!r}\n")
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.write(1, f"{pid}\n".encode("ascii"))
        os._exit(0)
    # The worker: a session and process group of its own, nothing inherited open.
    os.setsid()
    _detach_streams()
    return _serve(handler_class, method)


def _serve(handler_class: type[Any], method: str) -> int:
    import functools
    import math

    import anyio

    from ._environment import load_handler_environment
    from ._runner import STATUS_REFRESH, _start
    from .protocol import Operation, read_protocol_variables

    handler_dir = Path.cwd()
    env = dict(os.environ)
    try:
        environment = load_handler_environment(handler_dir)
        extension = read_protocol_variables(env).extension_name
    except ExtHandlerError:
        return 1
    _wait_for_enable(handler_dir, environment.config_folder, extension)
    records = WorkerRecords(environment.config_folder, extension)
    try:
        started = _start(
            handler_class,
            Operation.ENABLE,
            handler_dir=handler_dir,
            env=env,
            status_refresh=STATUS_REFRESH,
            detached=True,
            worker=method,
        )
        if isinstance(started, int):
            return started
        finish = functools.partial(
            started.finish, spec=None, time_budget=math.inf, use_crypto_library=True
        )
        code: int = anyio.run(finish, backend="asyncio")
        return code
    except ExtHandlerError:
        return 1
    finally:
        records.forget(method, os.getpid())
