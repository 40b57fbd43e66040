"""Background workers (`ctx.start_worker`): started by enable in a process of their own,
in process and as a command; replaced on a new sequence number, kept on the same one,
stopped by disable and uninstall, started afresh once their record is of another boot."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from exthandler_sdk import Context, Handler, Operation, run_operation
from exthandler_sdk._workers import WorkerError, WorkerRecords, alive, main_worker
from exthandler_sdk.procs import identify

from tests.sdk.sample_handlers import Layout
from tests.sdk.worker_handlers import NAME, Ticker

SPEC = "tests.sdk.worker_handlers:Ticker"


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(lib=tmp_path / "lib", name=NAME).create()
    yield layout
    for pid in _worker_pids(layout):  # whatever a failed test left running
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _worker_pids(layout: Layout) -> set[int]:
    return {int(line.split()[0]) for line in _lines(layout) if " worker " in f" {line} "}


def _lines(layout: Layout) -> list[str]:
    path = layout.handler_dir / "workers.log"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def message(layout: Layout, seq: int) -> str:
    try:
        return str(layout.status(seq)["status"]["formattedMessage"]["message"])
    except (OSError, ValueError, KeyError):
        return ""


def records(layout: Layout) -> WorkerRecords:
    return WorkerRecords(layout.handler_dir / "config", None)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie left for an absent reaper)."""
    identity = identify(pid)
    return identity is not None and alive(identity)


async def run(layout: Layout, operation: Operation, seq: int = 0, **kw: Any) -> int:
    handler: type[Handler[Any, Any]] = kw.pop("handler", Ticker)
    return await run_operation(
        handler, operation, handler_dir=layout.handler_dir, env=layout.env(seq), **kw
    )


def worker_of(layout: Layout, seq: int) -> int:
    """The pid of the worker reporting for `seq` (waits until it reports)."""
    wait_for(lambda: message(layout, seq).startswith(f"worker {seq} "))
    record = records(layout).read("tick")
    assert record is not None
    assert record.sequence == seq
    return record.identity.pid


@pytest.mark.anyio
async def test_an_in_process_enable_starts_a_worker_that_reports_after_it(layout: Layout) -> None:
    layout.write_settings(0, {"note": "hello"})
    assert await run(layout, Operation.ENABLE) == 0
    pid = worker_of(layout, 0)
    assert pid != os.getpid()
    assert os.getsid(pid) == pid  # a session of its own: not killed with the runtime's group
    assert os.getpgid(pid) == pid
    assert message(layout, 0).startswith("worker 0 hello ")
    # It began after the enable's own outcome was on disk, never before.
    assert f"{pid} 0 worker saw 'enable 0 done'" in _lines(layout)
    assert running(pid)
    assert await run(layout, Operation.DISABLE) == 0
    assert not running(pid)
    assert message(layout, 0) == "Disable succeeded"
    assert records(layout).read("tick") is None


@pytest.mark.anyio
async def test_the_worker_waits_for_the_enable_that_started_it(layout: Layout) -> None:
    """However long the enable takes after the launch, its outcome is written first."""
    layout.write_settings(0, {"action": "linger"})
    assert await run(layout, Operation.ENABLE) == 0
    pid = worker_of(layout, 0)
    assert f"{pid} 0 worker saw 'enable 0 done'" in _lines(layout)


@pytest.mark.anyio
async def test_same_sequence_keeps_the_worker_and_a_new_one_replaces_it(layout: Layout) -> None:
    layout.write_settings(0, {"note": "a"})
    assert await run(layout, Operation.ENABLE, 0) == 0
    first = worker_of(layout, 0)
    assert await run(layout, Operation.ENABLE, 0) == 0
    assert records(layout).read("tick").identity.pid == first  # type: ignore[union-attr]
    assert running(first)
    layout.write_settings(1, {"note": "b"})
    assert await run(layout, Operation.ENABLE, 1) == 0
    assert not running(first)
    second = worker_of(layout, 1)
    assert second != first
    assert message(layout, 1).startswith("worker 1 b ")
    assert await run(layout, Operation.UNINSTALL, 1) == 0
    assert not running(second)
    assert _lines(layout)[-1] == f"{os.getpid()} 1 uninstall"


@pytest.mark.anyio
async def test_a_record_of_another_boot_starts_a_new_worker(layout: Layout) -> None:
    layout.write_settings(0, {"note": "x"})
    assert await run(layout, Operation.ENABLE) == 0
    old = worker_of(layout, 0)
    path = records(layout).path("tick")
    document = json.loads(path.read_text())
    os.killpg(old, signal.SIGKILL)  # the machine went down with it
    document["boot"] = "another-boot"
    path.write_text(json.dumps(document))
    assert await run(layout, Operation.ENABLE) == 0
    new = records(layout).read("tick")
    assert new is not None
    assert new.identity.pid != old
    assert running(new.identity.pid)
    assert await run(layout, Operation.DISABLE) == 0
    assert not running(new.identity.pid)


def test_a_command_returns_and_its_worker_goes_on(layout: Layout) -> None:
    layout.write_settings(0, {"note": "cmd"})
    command = subprocess.Popen(
        [sys.executable, "-m", "exthandler_sdk", "run", SPEC, "enable"],
        cwd=layout.handler_dir,
        env=layout.process_env(0),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    assert (out, err) == (b"", b"")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(command.pid, signal.SIGKILL)  # what an agent does to a command's group
    pid = worker_of(layout, 0)
    assert running(pid)
    disable = subprocess.run(
        [sys.executable, "-m", "exthandler_sdk", "run", SPEC, "disable"],
        cwd=layout.handler_dir,
        env=layout.process_env(0),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert disable.returncode == 0, disable.stderr
    assert not running(pid)
    assert message(layout, 0) == "Disable succeeded"


@pytest.mark.anyio
async def test_a_worker_that_fails_reports_the_error(layout: Layout) -> None:
    layout.write_settings(0, {"action": "fail"})
    assert await run(layout, Operation.ENABLE) == 0
    wait_for(lambda: message(layout, 0) == "the worker broke")
    body = layout.status(0)["status"]
    assert (body["status"], body["code"]) == ("error", -1)
    wait_for(lambda: records(layout).read("fail") is None)  # it forgot itself on the way out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "reason"),
    [("private", "public method"), ("missing", "a method of the handler")],
)
async def test_start_worker_refuses_what_no_worker_can_run(
    layout: Layout, action: str, reason: str
) -> None:
    layout.write_settings(0, {"action": action})
    assert await run(layout, Operation.ENABLE) == 1
    body = layout.status(0)["status"]
    assert body["status"] == "error"
    assert reason in body["formattedMessage"]["message"]
    assert _worker_pids(layout) == set()


@pytest.mark.anyio
async def test_a_worker_is_started_by_enable_only(layout: Layout) -> None:
    with pytest.raises(WorkerError, match="started by enable, not by install"):
        await _context(layout, Operation.INSTALL).start_worker(Ticker().tick)


def _context(layout: Layout, operation: Operation) -> Context[Any, Any]:
    import logging

    from exthandler_sdk._environment import load_handler_environment
    from exthandler_sdk._events import Events
    from exthandler_sdk._heartbeat import Heartbeat
    from exthandler_sdk._status import StatusWriter

    environment = load_handler_environment(layout.handler_dir)
    log = logging.getLogger("test")
    return Context(
        settings=None,
        protected=None,
        sequence_number=0,
        extension_name=None,
        operation=operation,
        handler_name=NAME,
        handler_dir=layout.handler_dir,
        handler_version="1.0.0",
        environment=environment,
        log=log,
        status=StatusWriter(layout.status_path(0), NAME, operation),
        heartbeat=Heartbeat(environment.heartbeat_file, enabled=False),
        events=Events(folder=None, version="1.0.0", operation_id="x", log=log),
    )


@pytest.mark.anyio
async def test_a_class_defined_in_a_function_cannot_have_a_worker(layout: Layout) -> None:
    class Local(Ticker):
        pass

    layout.write_settings(0, {})
    assert await run(layout, Operation.ENABLE, handler=Local) == 1
    assert "importable by name" in message(layout, 0)


def test_the_worker_command_checks_its_arguments(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(layout.handler_dir)
    assert main_worker([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main_worker(["tests.sdk.nowhere:X", "tick"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main_worker([SPEC, "nothing"]) == 2
    assert "has no method 'nothing'" in capsys.readouterr().err


def test_records_are_read_with_care(layout: Layout) -> None:
    store = records(layout)
    path = store.path("tick")
    assert store.read("tick") is None
    target = layout.handler_dir / "elsewhere"
    target.write_text(json.dumps({"pid": 4242, "start": "1", "boot": "b", "method": "tick"}))
    path.symlink_to(target)
    assert store.read("tick") is None  # a link is never followed
    path.unlink()
    path.write_text(json.dumps({"pid": 4242, "start": "1", "boot": "b", "method": "tick"}))
    assert store.read("tick") is None  # no sequence number
    path.write_text(
        json.dumps({"pid": 4242, "start": "1", "boot": "b", "method": "tock", "sequence": 1})
    )
    assert store.read("tick") is None  # another method's
    assert store.methods() == ["tick"]
