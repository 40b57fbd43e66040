"""kill -9 of the runtime at many instants, then `apply` again: the same result as no kill.

A goal state that upgrades one handler, uninstalls another and installs a third is
applied by a real `python -m exthandler` process, which is killed with SIGKILL after the
k-th command it runs (plus a small, varying delay so that the kill also lands between
steps and inside the runtime's own writes). A second `apply` must then reach exactly the
final state of an uninterrupted run, and the commands of both runs together must be those
of an uninterrupted run, except that the one command running at the kill may run again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from exthandler._store import Store
from tests.runtime.support import Agent, OpRecord, Packages, extension, goal

FIRST = goal(
    extension("a", "Test.A", settings={"v": 1}),
    extension("b", "Test.B"),
    id="first",
)
SECOND = goal(
    extension("a", "Test.A", version="1.0", settings={"v": 2}),
    extension("c", "Test.C", protectedSettings={"secret": "do-not-leak-7f3a"}),
    id="second",
)


def run_cli(agent: Agent, document: dict[str, Any], state: Path) -> subprocess.Popen[bytes]:
    path = agent.root / f"goal-{document['id']}.json"
    path.write_text(json.dumps(document))
    command = [
        sys.executable,
        "-m",
        "exthandler",
        "apply",
        str(path),
        "--state-dir",
        str(state),
        "--repo",
        str(agent.repo),
        "--json",
        "--concurrency",
        "1",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def apply_fully(agent: Agent, document: dict[str, Any], state: Path) -> dict[str, Any]:
    process = run_cli(agent, document, state)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, (err + out).decode()
    view: dict[str, Any] = json.loads(out)
    return view


def normalised(view: dict[str, Any]) -> dict[str, Any]:
    for ext in view["extensions"]:
        for status in ext["statuses"]:
            status.pop("time", None)
    return view


def snapshot(state: Path) -> dict[str, Any]:
    """What must be identical: handler dirs and their config, and every handler record."""
    dirs = sorted(p.name for p in state.iterdir() if p.is_dir() and not p.name.startswith("."))
    config = {
        d: sorted(p.name for p in (state / d / "config").iterdir()) for d in dirs if d != "log"
    }
    store = Store(root=state, log_root=state / "log")
    converter = store.journal.converter
    records = {
        handler.key: json.loads(json.dumps(converter.unstructure(record)))
        for handler, record in store.load_records().items()
    }
    for record in records.values():
        for ext in record["extensions"]:
            # Settings digests are keyed per state dir: mask them.
            ext["settings_digest"] = "*"
            parts = (ext["converged"] or "").split("|")
            ext["converged"] = "|".join(parts[:3] + parts[4:])
    return {"dirs": dirs, "config": config, "records": records}


def by_handler(ops: list[OpRecord]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for op in ops:
        handler = op.dir.rsplit("-", 1)[0]
        result.setdefault(handler, []).append(op.short)
    return result


@pytest.fixture
def setup(agent: Agent, packages: Packages) -> tuple[Agent, list[OpRecord], dict[str, Any], Any]:
    for name in ("Test.A", "Test.B", "Test.C"):
        packages.build(name, "1.0.0")
    packages.build("Test.A", "1.0.1")
    # The reference: the first goal, then the second, with no kill.
    reference = agent.root / "reference"
    (agent.repo / "Test.A__1.0.1.zip").rename(agent.root / "hold.zip")
    apply_fully(agent, FIRST, reference)
    (agent.root / "hold.zip").rename(agent.repo / "Test.A__1.0.1.zip")
    agent.take_ops()
    view = normalised(apply_fully(agent, SECOND, reference))
    ops = agent.take_ops()
    return agent, ops, view, snapshot(reference)


def test_reference_run_is_what_the_protocol_says(
    setup: tuple[Agent, list[OpRecord], dict[str, Any], Any],
) -> None:
    _, ops, view, _ = setup
    assert by_handler(ops) == {
        "Test.B": ["disable Test.B-1.0.0", "uninstall Test.B-1.0.0"],
        "Test.A": [
            "disable Test.A-1.0.0",
            "update Test.A-1.0.1",
            "uninstall Test.A-1.0.0",
            "install Test.A-1.0.1",
            "enable Test.A-1.0.1",
        ],
        "Test.C": ["install Test.C-1.0.0", "enable Test.C-1.0.0"],
    }
    assert [e["name"] for e in view["extensions"]] == ["a", "c"]


@pytest.mark.parametrize("kill_after", range(10))
def test_kill_9_after_each_command(
    setup: tuple[Agent, list[OpRecord], dict[str, Any], Any], kill_after: int
) -> None:
    """Killed once the k-th command started (and a few ms later, between steps)."""
    crash_and_resume(setup, kill_after=kill_after, delay=0.004 * (kill_after % 4))


@pytest.mark.parametrize("delay", [0.2, 0.35, 0.5, 0.65])
def test_kill_9_during_start_up_and_fetch(
    setup: tuple[Agent, list[OpRecord], dict[str, Any], Any], delay: float
) -> None:
    """Killed at fixed instants after start: while loading, planning or fetching."""
    crash_and_resume(setup, kill_after=0, delay=delay)


def crash_and_resume(
    setup: tuple[Agent, list[OpRecord], dict[str, Any], Any], *, kill_after: int, delay: float
) -> None:
    agent, reference_ops, reference_view, reference_state = setup
    state = agent.root / "crashed"
    (agent.repo / "Test.A__1.0.1.zip").rename(agent.root / "hold.zip")
    apply_fully(agent, FIRST, state)
    (agent.root / "hold.zip").rename(agent.repo / "Test.A__1.0.1.zip")
    agent.take_ops()

    process = run_cli(agent, SECOND, state)
    deadline = time.monotonic() + 30
    while len(agent.ops()) < kill_after and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()

    view = normalised(apply_fully(agent, SECOND, state))
    ops = agent.take_ops()
    assert view == reference_view
    assert snapshot(state) == reference_state

    expected = by_handler(reference_ops)
    got = by_handler(ops)
    assert set(got) == set(expected)
    repeated = 0
    for handler, sequence in expected.items():
        observed = got[handler]
        extra = Counter(observed) - Counter(sequence)
        assert not Counter(sequence) - Counter(observed), f"{handler}: steps lost: {observed}"
        repeated += sum(extra.values())
        # Order is the protocol's, with a re-run step right after its first attempt.
        deduplicated = [op for i, op in enumerate(observed) if i == 0 or op != observed[i - 1]]
        assert deduplicated == sequence, f"{handler}: {observed}"
    assert repeated <= 1, f"more than the step in flight ran twice: {ops}"

    secret = b"do-not-leak-7f3a"
    for path in state.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), f"plaintext secret in {path}"


def test_a_command_left_running_by_a_killed_runtime_is_ended_first(
    agent: Agent, packages: Packages
) -> None:
    """kill -9 while enable runs: its process group lives on (it has its own session).
    The next apply ends it before running enable again, so two never run at once."""
    pids = agent.root / "enable.pid"
    packages.build(
        "Test.Slow",
        "1.0.0",
        actions={"enable": f'echo $$ > "{pids}"; sleep 30; write_status success 0 ok'},
    )
    document = goal(extension("slow", "Test.Slow"), id="slow")
    state = agent.root / "state"
    process = run_cli(agent, document, state)
    deadline = time.monotonic() + 30
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    orphan = int(pids.read_text())
    assert Path(f"/proc/{orphan}").exists()  # still running, as the runtime died

    pids.unlink()
    resumed = run_cli(agent, document, state)
    deadline = time.monotonic() + 30
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(pids.read_text()) != orphan
    stat = Path(f"/proc/{orphan}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
    assert "left running by a stopped runtime" in (state / "exthandler.log").read_text()
    resumed.kill()
    resumed.communicate()
    subprocess.run(["pkill", "-f", "sleep 30"], check=False)
