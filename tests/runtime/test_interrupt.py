"""Stopping `apply` mid-command: by a signal at the CLI, or by the host's cancel scope.

The running command's process group is ended, what finished is recorded, the
interrupted step is shown `transitioning` (never succeeded) and named in both logs, and
the next apply runs it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from exthandler import RuntimeConfig, load_goal_state, open_runtime, read_instance_view
from tests.runtime.support import (
    Agent,
    Packages,
    extension,
    goal,
    start_run,
    status_of,
    wait_until,
)

# The enable of sequence number 1 blocks while `block` exists: the test decides when the
# command would end, so nothing depends on how fast the machine is.
_BLOCKING_ENABLE = (
    'touch "$dir/started.$ConfigSequenceNumber"\n'
    'while [ "$ConfigSequenceNumber" = 1 ] && [ -e "$dir/../../block" ]; do sleep 0.05; done\n'
    'write_status success 0 "seq $ConfigSequenceNumber"'
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def blocking(agent: Agent, packages: Packages) -> Path:
    packages.build("Test.Ext", "1.0.0", actions={"enable": _BLOCKING_ENABLE})
    code, _ = agent.apply(goal(extension("ext", settings={"n": 0})))
    assert code == 0
    agent.take_ops()
    block = agent.root / "block"
    block.write_text("")
    return block


def _started(agent: Agent) -> bool:
    return (agent.state / "Test.Ext-1.0.0" / "started.1").exists()


def _assert_interrupted(agent: Agent, view: dict[str, object]) -> None:
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/transitioning"
    assert "interrupted" in status["message"]
    assert "runs again" in status["message"]
    assert "interrupted" in (agent.state / "exthandler.log").read_text()
    command_log = agent.state / "log" / "Test.Ext" / "CommandExecution.log"
    assert "interrupted" in command_log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_apply_cleanly_and_the_step_runs_again(
    agent: Agent, blocking: Path, signum: signal.Signals
) -> None:
    agent.goal_path.write_text(json.dumps(goal(extension("ext", settings={"n": 1}))))
    argv = [
        sys.executable,
        "-m",
        "exthandler",
        "apply",
        str(agent.goal_path),
        "--state-dir",
        str(agent.state),
        "--repo",
        str(agent.repo),
        "--json",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _started(agent), what="the enable started")
        enable = [op for op in agent.ops() if op.op == "enable"][-1]
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert signum.name in lines[0]
    assert b"Traceback" not in err
    assert out == b""
    assert not _alive(enable.pid)  # its process group was ended, not orphaned
    code, shown = agent.cli("status", "--state-dir", str(agent.state), "--json")
    assert code == 0
    view = json.loads(shown)
    assert view["extensions"][0]["sequenceNumber"] == 1
    _assert_interrupted(agent, view)

    blocking.unlink()
    agent.take_ops()
    code, view = agent.apply(goal(extension("ext", settings={"n": 1})))
    assert code == 0, view
    assert [(op.op, op.env["ConfigSequenceNumber"]) for op in agent.take_ops()] == [("enable", "1")]
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"


def test_cancelling_apply_from_the_host_leaves_a_truthful_view(
    agent: Agent, blocking: Path
) -> None:
    config = RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        boot_id_path=Path(os.environ["EXTHANDLER_BOOT_ID_FILE"]),
        kill_grace=1.0,
    )
    changed = load_goal_state(json.dumps(goal(extension("ext", settings={"n": 1}))).encode())

    async def main() -> dict[str, object]:
        async with open_runtime(config) as runtime:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(runtime.apply, changed)
                    await anyio.to_thread.run_sync(
                        lambda: wait_until(lambda: _started(agent), what="the enable started")
                    )
                    scope.cancel()
            live = runtime.instance_view().to_json()
            assert status_of(live, "ext")["code"] == "ProvisioningState/transitioning"
            return live

    live = anyio.run(main)
    assert "interrupted" in status_of(live, "ext")["message"]
    written = read_instance_view(agent.state)
    assert written is not None
    _assert_interrupted(agent, written.to_json())


def test_run_notices_a_new_goal_file_with_an_older_time(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    source = agent.root / "goals"
    source.mkdir()
    first = source / "a.json"
    first.write_text(json.dumps(goal(extension("ext", settings={"n": 1}))))
    process = start_run(agent, source)
    try:
        wait_until(lambda: [op.op for op in agent.ops()] == ["install", "enable"])
        second = source / "b.json"
        second.write_text(json.dumps(goal(extension("ext", settings={"n": 2}))))
        stat = first.stat()
        # Copied with its old time (cp -p, rsync -t), or the clock stepped back.
        os.utime(second, ns=(stat.st_atime_ns - 10**10, stat.st_mtime_ns - 10**10))
        wait_until(lambda: [op.op for op in agent.ops()] == ["install", "enable", "enable"])
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    assert [op.env["ConfigSequenceNumber"] for op in agent.ops()] == ["0", "0", "1"]


def test_run_reports_an_impossible_goal_and_goes_on(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    source = agent.root / "goal.json"
    source.write_text(json.dumps(goal(extension("a"), extension("b"))))  # single-config
    process = start_run(agent, source)
    try:
        log = agent.state / "exthandler.log"
        wait_until(lambda: log.exists() and "cannot share handler" in log.read_text())
        source.write_text(json.dumps(goal(extension("a"))))
        wait_until(lambda: "run: applied" in log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    assert b"cannot share handler" in err
    assert b"applied" in err
    assert [op.op for op in agent.ops()] == ["install", "enable"]
