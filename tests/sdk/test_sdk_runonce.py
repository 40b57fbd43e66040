"""Run-once enable, supersession, crashes, detaching, and `python -m exthandler_sdk run`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from exthandler_sdk import Handler, HandlerError, Operation, load_handler, run_operation
from exthandler_sdk._runner import HandlerLoadError, main_run

from tests.sdk.sample_handlers import Daemon, Hello, Layout, Scripted
from tests.sdk.sample_handlers import start as start_task

SPEC = "tests.sdk.sample_handlers:Scripted"


async def run(
    layout: Layout, seq: int = 0, handler: type[Handler[Any, Any]] = Scripted, **kwargs: Any
) -> int:
    return await run_operation(
        handler, Operation.ENABLE, handler_dir=layout.handler_dir, env=layout.env(seq), **kwargs
    )


def start(layout: Layout, seq: int, *extra: str, spec: str = SPEC) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "exthandler_sdk", "run", spec, "enable", *extra],
        cwd=layout.handler_dir,
        env=layout.process_env(seq),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status_is(layout: Layout, seq: int, level: str, message: str | None = None) -> bool:
    try:
        body = layout.status(seq)["status"]
    except (OSError, ValueError):
        return False
    return bool(body["status"] == level) and (
        message is None or message in body["formattedMessage"]["message"]
    )


@pytest.mark.anyio
async def test_success_is_not_repeated(layout: Layout) -> None:
    layout.write_settings(0, {"action": "warning", "message": "first"})
    assert await run(layout) == 0
    before = layout.status(0)
    await anyio.sleep(1.1)
    assert await run(layout) == 0
    after = layout.status(0)
    assert layout.runs() == ["enable 0 0 warning"]
    assert after["status"] == before["status"]
    assert after["timestampUTC"] != before["timestampUTC"]


@pytest.mark.anyio
async def test_applied_sequence_without_status_reports_success(layout: Layout) -> None:
    layout.write_settings(0, {})
    (layout.handler_dir / "mrseq").write_text("0\n")
    assert await run(layout) == 0
    assert status_is(layout, 0, "success", "already applied")
    assert layout.runs() == []


@pytest.mark.anyio
async def test_daemon_runs_again_on_the_same_sequence(layout: Layout) -> None:
    layout.write_settings(0, {})
    assert await run(layout, handler=Daemon) == 0
    assert await run(layout, handler=Daemon) == 0
    assert layout.runs() == ["enable 0 0 succeed", "enable 0 0 succeed"]


@pytest.mark.anyio
async def test_failure_is_retried(layout: Layout) -> None:
    layout.write_settings(0, {"action": "fail", "code": 52})
    assert await run(layout) == 52
    layout.write_settings(0, {"action": "succeed"})
    assert await run(layout) == 0
    assert layout.runs() == ["enable 0 0 fail", "enable 0 0 succeed"]
    assert layout.mrseq() == "0"


@pytest.mark.anyio
async def test_older_sequence_after_newer_success_is_ignored(layout: Layout) -> None:
    layout.write_settings(1, {})
    layout.write_settings(2, {})
    assert await run(layout, 2) == 0
    assert await run(layout, 1) == 0
    assert layout.runs() == ["enable 2 0 succeed"]
    assert status_is(layout, 1, "success", "older than 2")
    assert layout.mrseq() == "2"


@pytest.mark.anyio
async def test_newer_sequence_supersedes_a_running_one(layout: Layout) -> None:
    layout.write_settings(1, {"action": "sleep", "seconds": 30})
    layout.write_settings(2, {"action": "succeed"})
    async with anyio.create_task_group() as group:
        first = start_task(group, lambda: run(layout, 1))
        await anyio.sleep(0.3)
        with anyio.fail_after(10):
            assert await run(layout, 2) == 0
        assert await first.wait() == 0
    assert status_is(layout, 1, "warning", "superseded by sequence number 2")
    assert status_is(layout, 2, "success")
    assert layout.mrseq() == "2"
    assert layout.runs() == ["enable 1 0 sleep", "enable 2 0 succeed"]


@pytest.mark.anyio
async def test_older_sequence_waits_out_a_newer_running_one(layout: Layout) -> None:
    layout.write_settings(1, {})
    layout.write_settings(2, {"action": "sleep", "seconds": 0.5})
    async with anyio.create_task_group() as group:
        newer = start_task(group, lambda: run(layout, 2))
        await anyio.sleep(0.2)
        assert await run(layout, 1) == 0
        assert status_is(layout, 1, "success", "older than 2")
        assert await newer.wait() == 0
    assert layout.runs() == ["enable 2 0 sleep", "enable 2 0 woke"]


@pytest.mark.anyio
async def test_same_sequence_already_running_is_left_alone(layout: Layout) -> None:
    layout.write_settings(1, {"action": "sleep", "seconds": 0.5})
    async with anyio.create_task_group() as group:
        first = start_task(group, lambda: run(layout, 1))
        await anyio.sleep(0.2)
        assert await run(layout, 1) == 0
        assert await first.wait() == 0
    assert layout.runs() == ["enable 1 0 sleep", "enable 1 0 woke"]


@pytest.mark.anyio
async def test_waiter_superseded_while_waiting(layout: Layout) -> None:
    layout.write_settings(1, {"action": "swallow", "seconds": 1.0})
    layout.write_settings(2, {})
    layout.write_settings(3, {})
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            first = start_task(group, lambda: run(layout, 1))
            await anyio.sleep(0.2)
            second = start_task(group, lambda: run(layout, 2))
            await anyio.sleep(0.05)
            third = start_task(group, lambda: run(layout, 3))
    assert [first.result, second.result, third.result] == [0, 0, 0]
    assert status_is(layout, 1, "warning", "superseded")
    # 2 either wakes up superseded by 3, or after 3 finished, as an older sequence.
    assert status_is(layout, 2, "warning", "superseded by sequence number 3") or status_is(
        layout, 2, "success", "older than 3"
    )
    assert status_is(layout, 3, "success")
    assert "enable 2 0 succeed" not in layout.runs()


def test_run_command_in_a_subprocess(layout: Layout) -> None:
    layout.write_settings(0, {"message": "from a process"}, {"token": "t"})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exthandler_sdk",
            "run",
            "tests.sdk.sample_handlers:Hello",
            "enable",
        ],
        cwd=layout.handler_dir,
        env=layout.process_env(0),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert status_is(layout, 0, "success")
    assert layout.runs() == ["enable 0 0 from a process"]


def test_crash_mid_enable_runs_again(layout: Layout) -> None:
    layout.write_settings(0, {"action": "sleep", "seconds": 60})
    process = start(layout, 0)
    try:
        wait_for(lambda: status_is(layout, 0, "transitioning", "sleeping"), 30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert layout.mrseq() is None
    layout.write_settings(0, {"action": "succeed"})
    result = start(layout, 0)
    result.communicate(timeout=60)
    assert result.returncode == 0
    assert layout.runs() == ["enable 0 0 sleep", "enable 0 0 succeed"]
    assert layout.mrseq() == "0"


def test_supersession_between_processes(layout: Layout) -> None:
    layout.write_settings(1, {"action": "sleep", "seconds": 60})
    layout.write_settings(2, {"action": "succeed"})
    first = start(layout, 1)
    try:
        wait_for(lambda: status_is(layout, 1, "transitioning", "sleeping"), 30)
        second = start(layout, 2)
        second.communicate(timeout=60)
        first.communicate(timeout=30)
    finally:
        first.kill()
        first.communicate()
    assert (first.returncode, second.returncode) == (0, 0)
    assert status_is(layout, 1, "warning", "superseded by sequence number 2")
    assert status_is(layout, 2, "success")
    assert layout.mrseq() == "2"


def test_detached_enable_reports_after_the_command_returned(layout: Layout) -> None:
    layout.write_settings(0, {"action": "detach", "seconds": 1.5})
    command = start(layout, 0)
    _out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    assert status_is(layout, 0, "transitioning") or status_is(layout, 0, "success")
    wait_for(lambda: status_is(layout, 0, "success", "finished in the background"), 10)
    wait_for(lambda: layout.mrseq() == "0", 5)
    assert layout.runs() == ["enable 0 0 detach", "enable 0 1 detach", "enable 0 1 worker-done"]


@pytest.mark.anyio
async def test_detach_in_process_does_nothing(layout: Layout) -> None:
    layout.write_settings(0, {"action": "detach", "seconds": 0})
    assert await run(layout) == 0
    assert status_is(layout, 0, "success", "finished in the background")
    assert layout.runs() == ["enable 0 0 detach", "enable 0 0 worker-done"]


def test_main_run_errors(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(layout.handler_dir)
    assert main_run([]) == 2
    assert main_run([SPEC, "explode"]) == 2
    assert "unknown operation" in capsys.readouterr().err
    assert main_run(["tests.sdk.nowhere:X", "enable"]) == 2
    assert "cannot import" in capsys.readouterr().err
    monkeypatch.setenv("ConfigSequenceNumber", "abc")
    assert main_run([SPEC, "ENABLE"]) == 1
    assert "ConfigSequenceNumber" in capsys.readouterr().err
    monkeypatch.setenv("ConfigSequenceNumber", "0")
    layout.write_settings(0, {})
    assert main_run([SPEC, "install"]) == 0


def test_load_handler() -> None:
    assert load_handler("tests.sdk.sample_handlers:Hello") is Hello
    for spec, message in [
        ("nocolon", "expected MODULE:CLASS"),
        ("tests.sdk.sample_handlers:Missing", "has no"),
        ("tests.sdk.sample_handlers:NOT_A_HANDLER", "not a subclass"),
        ("tests.sdk.sample_handlers:Layout.create", "not a subclass"),
    ]:
        with pytest.raises(HandlerLoadError, match=message):
            load_handler(spec)
    assert issubclass(HandlerLoadError, ImportError)
    assert not issubclass(HandlerLoadError, HandlerError)


def test_worker_survives_the_command(layout: Layout) -> None:
    """The detached worker is in its own session (not killed with the command's group)."""
    layout.write_settings(0, {"action": "detach", "seconds": 1.0})
    command = subprocess.Popen(
        [sys.executable, "-m", "exthandler_sdk", "run", SPEC, "enable"],
        cwd=layout.handler_dir,
        env=layout.process_env(0),
        start_new_session=True,
    )
    assert command.wait(timeout=60) == 0
    with contextlib.suppress(ProcessLookupError):
        os.killpg(command.pid, signal.SIGKILL)
    wait_for(lambda: status_is(layout, 0, "success", "finished in the background"), 10)


@pytest.mark.anyio
async def test_reenable_after_disable_does_not_show_the_disable_status(layout: Layout) -> None:
    """The sequence already succeeded, so enable is skipped; but the status must be the
    enable's, not what the disable wrote in between."""
    from tests.sdk.sample_handlers import Plain

    layout.settings_path(0).write_text("")
    env = layout.env(0)
    assert (
        await run_operation(Plain, Operation.ENABLE, handler_dir=layout.handler_dir, env=env) == 0
    )
    assert (
        await run_operation(Plain, Operation.DISABLE, handler_dir=layout.handler_dir, env=env) == 0
    )
    assert layout.status(0)["status"]["operation"] == "Disable"
    assert (
        await run_operation(Plain, Operation.ENABLE, handler_dir=layout.handler_dir, env=env) == 0
    )
    status = layout.status(0)["status"]
    assert status["operation"] == "Enable"
    assert status["status"] == "success"
    assert "already applied" in status["formattedMessage"]["message"]
