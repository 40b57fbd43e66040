"""kill -9 of the runtime at many instants, then `apply` again: the same result as no kill.

A goal state that upgrades one handler, uninstalls another and installs a third is
applied by a real `python -m exthandler` process, which is killed with SIGKILL after the
k-th command it runs (plus a small, varying delay so that the kill also lands between
steps and inside the runtime's own writes). A second `apply` must then reach exactly the
final state of an uninterrupted run, and the commands of both runs together must be those
of an uninterrupted run, except that the one command running at the kill may run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from exthandler._state.store import Store
from tests.runtime.support import Agent, OpRecord, Packages, extension, goal, wait_until

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


def run_cli(
    agent: Agent, document: dict[str, Any], state: Path, repo: Path | None = None
) -> subprocess.Popen[bytes]:
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
        str(repo or agent.repo),
        "--json",
        "--concurrency",
        "1",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def apply_fully(
    agent: Agent, document: dict[str, Any], state: Path, repo: Path | None = None
) -> dict[str, Any]:
    process = run_cli(agent, document, state, repo)
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


@attrs.frozen(kw_only=True)
class Reference:
    """The uninterrupted run every crash is compared with, and the repositories it used:
    `first` (without Test.A 1.0.1) for the first goal, `second` for the second."""

    first: Path
    second: Path
    ops: list[OpRecord]
    view: dict[str, Any]
    state: dict[str, Any]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Computed once for the module: the packages, and the first goal then the second,
    applied with no kill."""
    root = tmp_path_factory.mktemp("crash-reference")
    first, second = root / "first", root / "second"
    first.mkdir()
    second.mkdir()
    for name in ("Test.A", "Test.B", "Test.C"):
        built = Packages(repo=first).build(name, "1.0.0")
        shutil.copyfile(built, second / built.name)  # the very same bytes in both
    Packages(repo=second).build("Test.A", "1.0.1")
    ops_log = root / "ops.log"
    (root / "boot_id").write_text("boot-1\n")
    agent = Agent(root=root, repo=second, ops_log=ops_log, goal_path=root / "goal.json")
    with pytest.MonkeyPatch.context() as patch:  # what the `agent` fixture sets for a test
        patch.setenv("EXTHANDLER_TEST_OPS", str(ops_log))
        patch.setenv("EXTHANDLER_BOOT_ID_FILE", str(root / "boot_id"))
        patch.delenv("EXTHANDLER_REPO", raising=False)
        state = root / "state"
        apply_fully(agent, FIRST, state, first)
        agent.take_ops()
        view = normalised(apply_fully(agent, SECOND, state, second))
        ops = agent.take_ops()
    return Reference(first=first, second=second, ops=ops, view=view, state=snapshot(state))


def test_reference_run_is_what_the_protocol_says(reference: Reference) -> None:
    assert by_handler(reference.ops) == {
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
    assert [e["name"] for e in reference.view["extensions"]] == ["a", "c"]


@pytest.mark.parametrize("kill_after", range(10))
def test_kill_9_after_each_command(agent: Agent, reference: Reference, kill_after: int) -> None:
    """Killed once the k-th command started (and a few ms later, between steps)."""
    crash_and_resume(agent, reference, kill_after=kill_after, delay=0.004 * (kill_after % 4))


@pytest.mark.parametrize("delay", [0.2, 0.35, 0.5, 0.65])
def test_kill_9_during_start_up_and_fetch(agent: Agent, reference: Reference, delay: float) -> None:
    """Killed at fixed instants after start: while loading, planning or fetching."""
    crash_and_resume(agent, reference, kill_after=0, delay=delay)


def crash_and_resume(agent: Agent, reference: Reference, *, kill_after: int, delay: float) -> None:
    state = agent.root / "crashed"
    apply_fully(agent, FIRST, state, reference.first)
    agent.take_ops()

    process = run_cli(agent, SECOND, state, reference.second)
    deadline = time.monotonic() + 30
    while len(agent.ops()) < kill_after and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()

    view = normalised(apply_fully(agent, SECOND, state, reference.second))
    ops = agent.take_ops()
    assert view == reference.view
    assert snapshot(state) == reference.state

    expected = by_handler(reference.ops)
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
        actions={"enable": f'echo $$ > "{pids}.tmp"; mv "{pids}.tmp" "{pids}"; sleep 600'},
    )
    document = goal(extension("slow", "Test.Slow"), id="slow")
    state = agent.root / "state"
    groups: list[int] = []  # each enable runs in a process group of its own
    processes = [run_cli(agent, document, state)]
    try:
        wait_until(pids.exists, what="the first enable started")
        orphan = int(pids.read_text())
        groups.append(os.getpgid(orphan))
        os.kill(processes[0].pid, signal.SIGKILL)
        processes[0].communicate()
        assert Path(f"/proc/{orphan}").exists()  # still running, as the runtime died

        pids.unlink()
        processes.append(run_cli(agent, document, state))
        wait_until(pids.exists, what="the second enable started")
        resumed = int(pids.read_text())
        groups.append(os.getpgid(resumed))
        assert resumed != orphan
        stat = Path(f"/proc/{orphan}/stat")
        assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
        assert "left running by a stopped runtime" in (state / "exthandler.log").read_text()
    finally:
        for process in processes:
            process.kill()
            process.communicate()
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
