"""CustomScript and the processes it runs: what other users can see of them, and which
process groups disable, uninstall and a new run may kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from exthandler_plugins._shared import process as _process
from exthandler_sdk._procs import ProcessIdentity, identify, read_boot_id

from exthandler import InstanceView
from tests.plugins.support import DIR, apply, goal, status, subs

SECRET = "TopSecretCommandToken"


def wait_for(path: Path, within: float = 60.0) -> None:
    """Until `path` exists (the timeout is only a safety net against a hung test)."""
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@contextlib.contextmanager
def applying(state: Path, document: Any) -> Iterator[Callable[[], InstanceView]]:
    """`apply` in a thread; yields a function that waits for and returns its view."""
    result: list[InstanceView] = []
    thread = threading.Thread(target=lambda: result.append(apply(state, document)))
    thread.start()

    def view() -> InstanceView:
        thread.join(timeout=120)
        assert result, "the apply did not finish"
        return result[0]

    try:
        yield view
    finally:
        thread.join(timeout=120)


def process_ids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
        return int(fields[2])
    return None


def proc_file(pid: int, name: str) -> bytes:
    """/proc/<pid>/<name>, or b"" for a process gone (or not ours to read) meanwhile."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/{name}").read_bytes()
    return b""


def holding_command(ready: Path, release: Path, *, secret: str = SECRET) -> str:
    """A command that names `secret`, announces its pid in `ready`, then waits for
    `release` (bounded, so that a failed test leaves nothing running for long)."""
    return (
        f": {secret}; echo $$ > {ready}.tmp; mv {ready}.tmp {ready}; echo ran; i=0; "
        f'while [ ! -e {release} ] && [ "$i" -lt 1200 ]; do sleep 0.05; i=$((i+1)); done'
    )


# --- a protected command is never in anybody's arguments -----------------------------------


def test_a_protected_command_is_in_no_process_arguments_or_environment(tmp_path: Path) -> None:
    state, ready, release = tmp_path / "s", tmp_path / "ready", tmp_path / "release"
    command = holding_command(ready, release)
    previous = os.umask(0)  # whatever the umask, nothing it writes is readable by others
    try:
        with applying(state, goal({}, {"commandToExecute": command})) as finished:
            try:
                wait_for(ready)
                group = int(ready.read_text())
                members = [pid for pid in process_ids() if group_of(pid) == group]
                assert group in members
                for pid in members:
                    assert SECRET.encode() not in proc_file(pid, "environ"), pid
                for pid in process_ids():  # any process of the machine, its group included
                    assert SECRET.encode() not in proc_file(pid, "cmdline"), pid
                download = state / DIR / "download"
                wait_for(download / "0" / "pid")  # written once the command has started
                for path, mode in (
                    (download, 0o700),
                    (download / "0", 0o700),
                    (download / "0" / "command.sh", 0o700),
                    (download / "0" / "stdout", 0o600),
                    (download / "0" / "stderr", 0o600),
                    (download / "0" / "pid", 0o600),
                ):
                    assert path.stat().st_mode & 0o777 == mode, path
            finally:
                release.touch()
            view = finished()
    finally:
        os.umask(previous)
    assert status(view)[0] == "ProvisioningState/succeeded"
    assert subs(view)["StdOut"][1] == "ran\n"


@pytest.mark.parametrize("where", ["public", "protected"])
def test_a_command_runs_as_sh_dash_c_would_run_it(tmp_path: Path, where: str) -> None:
    # $0, the arguments and the exit status are those of `/bin/sh -c <command>`, wherever
    # the command comes from; a public one is still run as exactly that.
    command = "echo \"$0 $#\"; tr '\\0' ' ' < /proc/$$/cmdline; echo; exit 3"
    settings = {"commandToExecute": command}
    document = goal(settings) if where == "public" else goal({}, settings)
    view = apply(tmp_path / "s", document)
    assert status(view)[0] == "ProvisioningState/failed/3"
    first, argv = subs(view)["StdOut"][1].splitlines()
    assert first == "/bin/sh 0"
    if where == "public":
        assert argv == f"/bin/sh -c {command} "
    else:
        assert argv == "/bin/sh -c . ./command.sh "


# --- a stale pid file never kills a stranger -----------------------------------------------


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process leading its own session and group."""
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _stale_record(kind: str, pid: int) -> str:
    identity = identify(pid)
    assert identity is not None
    if kind == "bare-pid":  # what older versions wrote, say before a reboot
        return f"{pid}\n"
    if kind == "other-boot":
        return ProcessIdentity(pid=pid, start=identity.start, boot="a-boot-before").to_json()
    assert kind == "other-start"
    return ProcessIdentity(pid=pid, start="1", boot=identity.boot).to_json()


@pytest.mark.parametrize("kind", ["bare-pid", "other-boot", "other-start"])
@pytest.mark.parametrize("action", ["disable", "uninstall", "next-run", "same-run-again"])
def test_a_stale_pid_file_spares_the_process_now_holding_that_pid(
    tmp_path: Path, stranger: subprocess.Popen[bytes], kind: str, action: str
) -> None:
    state = tmp_path / "s"
    # A failed run is retried in a fresh download dir; a successful one can be disabled.
    first = "exit 1" if action == "same-run-again" else "true"
    apply(state, goal({"commandToExecute": first}))
    record = state / DIR / "download" / "0" / "pid"
    record.write_text(_stale_record(kind, stranger.pid))  # left behind as after a kill -9
    if action == "disable":
        document = goal({"commandToExecute": first}, state="disabled")
    elif action == "uninstall":
        document = goal({"commandToExecute": first}, state="uninstall")
    elif action == "next-run":  # a new sequence number cleans the old download dir
        document = goal({"commandToExecute": "true", "timestamp": 1})
    else:
        document = goal({"commandToExecute": "true"}, forceUpdateTag="again")
    apply(state, document)
    assert stranger.poll() is None, "an unrelated process was killed"
    assert not record.exists()


def test_the_recorded_script_itself_is_still_stopped(tmp_path: Path) -> None:
    directory = tmp_path / "download" / "0"
    directory.mkdir(parents=True)
    process = _process.start(directory, "sleep 120 & sleep 120", dict(os.environ))
    try:
        recorded = json.loads((directory / _process.PID_FILE).read_text())
        assert recorded["pid"] == process.pid
        assert recorded["boot"] == read_boot_id()
        assert _process.stop_recorded(directory)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert not (directory / _process.PID_FILE).exists()
        assert not _process.stop_recorded(directory)  # nothing recorded any more
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_script_that_cannot_be_recorded_is_not_left_running(tmp_path: Path) -> None:
    directory = tmp_path / "download" / "0"
    (directory / _process.PID_FILE).mkdir(parents=True)  # the record cannot be written
    with pytest.raises(IsADirectoryError):
        _process.start(directory, "sleep 120", dict(os.environ))

    def cwd(pid: int) -> str:
        with contextlib.suppress(OSError):  # gone, or a zombie: it runs no more
            return os.readlink(f"/proc/{pid}/cwd")
        return ""

    # SIGKILL went to the whole group; its members other than the awaited leader die a
    # moment later (the deadline is only a safety net: the script would run 120 s).
    deadline = time.monotonic() + 60
    while left := [pid for pid in process_ids() if cwd(pid) == str(directory)]:
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.01)
