"""What an embedding application sees: events, plan, logging, the view while steps run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from exthandler import RuntimeConfig, open_runtime, parse_goal_state
from exthandler._report.events import (
    EventsDropped,
    ExtensionChanged,
    PassFinished,
    PassStarted,
    StepFinished,
    StepStarted,
)
from tests.runtime.support import Agent, Packages


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def goal(*extensions: dict[str, Any], id: str = "g1") -> Any:
    return parse_goal_state(json.dumps({"id": id, "extensions": list(extensions)}))


def ext(name: str, version: str = "1.0", type_: str = "Ext", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "publisher": "Test",
        "type": type_,
        "typeHandlerVersion": version,
        "settings": {"n": 1},
        **extra,
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    packages = Packages(tmp_path / "repo")
    packages.repo.mkdir()
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Ext", "1.1.0")
    packages.build("Test.Other", "1.0.0", actions={"enable": "exit 3"})
    return packages.repo


def config(tmp_path: Path, repo: Path) -> RuntimeConfig:
    return RuntimeConfig(state_dir=tmp_path / "state", repositories=[repo], load_entry_points=False)


@pytest.mark.anyio
async def test_events_tell_a_pass_step_by_step(tmp_path: Path, repo: Path) -> None:
    seen: list[Any] = []
    async with open_runtime(config(tmp_path, repo)) as runtime:
        stream = runtime.events()

        async def consume() -> None:
            async for event in stream:
                seen.append(event)
                if isinstance(event, PassFinished):
                    stream.close()

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await runtime.apply(goal(ext("a")))
    kinds = [type(e).__name__ for e in seen]
    assert kinds[0] == "PassStarted"
    assert kinds[-1] == "PassFinished"
    assert isinstance(seen[0], PassStarted)
    assert seen[0].goal_state_id == "g1"
    started = [(e.kind, e.extension) for e in seen if isinstance(e, StepStarted)]
    finished = [e for e in seen if isinstance(e, StepFinished)]
    assert [k for k, _ in started] == ["fetch", "install", "enable"]
    assert [e.result.kind for e in finished] == ["fetch", "install", "enable"]
    assert all(e.ok for e in finished)
    assert finished[-1].extension == "a"
    changed = [e for e in seen if isinstance(e, ExtensionChanged)]
    # Transitioning from the moment its step starts, then succeeded.
    assert changed[0].view.statuses[0].code == "ProvisioningState/transitioning"
    assert changed[0].view.statuses[0].message == "fetching Test.Ext 1.0.0"
    assert any("enable of Test.Ext 1.0.0 is running" in c.view.statuses[0].message for c in changed)
    assert changed[-1].view.statuses[0].code == "ProvisioningState/succeeded"
    end = seen[-1]
    assert isinstance(end, PassFinished)
    assert end.commands == 2
    assert end.failed == ()
    assert not end.cancelled


@pytest.mark.anyio
async def test_a_slow_consumer_loses_the_oldest_events_and_is_told(
    tmp_path: Path, repo: Path
) -> None:
    async with open_runtime(config(tmp_path, repo)) as runtime:
        stream = runtime.events(limit=2)
        await runtime.apply(goal(ext("a")))  # nobody reads meanwhile: the engine goes on
        stream.close()
        got = [event async for event in stream]
    assert isinstance(got[0], EventsDropped)
    assert got[0].count > 0
    assert len(got) == 3
    assert isinstance(got[-1], PassFinished)


@pytest.mark.anyio
async def test_the_view_shows_a_running_step_as_transitioning(tmp_path: Path) -> None:
    packages = Packages(tmp_path / "repo")
    packages.repo.mkdir()
    gate = tmp_path / "gate"
    packages.build(
        "Test.Ext", "1.0.0", actions={"enable": f"while [ ! -e {gate} ]; do sleep 0.02; done"}
    )
    async with open_runtime(config(tmp_path, packages.repo)) as runtime:
        stream = runtime.events()
        async with anyio.create_task_group() as group:
            group.start_soon(runtime.apply, goal(ext("a")))
            async for event in stream:
                if isinstance(event, StepStarted) and event.kind == "enable":
                    break
            view = runtime.instance_view()
            status = view.extensions[0].statuses[0]
            assert status.code == "ProvisioningState/transitioning"
            assert "enable of Test.Ext 1.0.0 is running" in status.message
            gate.touch()
        stream.close()
    assert runtime.instance_view().extensions[0].statuses[0].code == ("ProvisioningState/succeeded")


@pytest.mark.anyio
async def test_plan_says_what_apply_would_do_and_changes_nothing(
    tmp_path: Path, repo: Path
) -> None:
    async with open_runtime(config(tmp_path, repo)) as runtime:
        first = await runtime.plan(
            goal(ext("a"), ext("b", type_="Other", provisionAfterExtensions=["a"]))
        )
        state = tmp_path / "state"
        assert not (state / "Test.Ext-1.1.0").exists()
        steps = [(s.kind, s.extension, s.reason) for s in first.steps]
        assert steps[:3] == [
            ("fetch", None, "not installed"),
            ("install", None, "not installed"),
            ("enable", "a", "not enabled yet"),
        ]
        assert [s.after for s in first.steps if s.extension == "b"] == [("a",)]
        await runtime.apply(goal(ext("a")))
        assert (await runtime.plan(goal(ext("a")))).steps == ()
        changed = await runtime.plan(goal(ext("a", settings={"n": 2})))
        assert [(s.kind, s.reason) for s in changed.steps] == [
            ("enable", "settings changed (sequence number 0 -> 1)")
        ]
        upgrade = await runtime.plan(goal(ext("a", "1.1")))
        assert [s.kind for s in upgrade.steps][:3] == ["fetch", "disable", "copy-state"]
        assert upgrade.steps[0].reason == "upgrade 1.0.0 -> 1.1.0"
        assert not (state / "Test.Ext-1.1.0").exists()
        missing = await runtime.plan(goal(ext("a", "9.0")))
        assert missing.steps == ()
        assert "9.0" in missing.problems[0]


@pytest.mark.anyio
async def test_the_stdlib_logger_gets_steps_and_runtime_lines(
    tmp_path: Path, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exthandler")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    settings = RuntimeConfig(
        state_dir=tmp_path / "state", repositories=[repo, not_a_dir], load_entry_points=False
    )
    async with open_runtime(settings) as runtime:
        await runtime.apply(goal(ext("a"), ext("bad", type_="Other")))
    steps = [r for r in caplog.records if r.name == "exthandler.steps"]
    enable = next(
        r
        for r in steps
        if getattr(r, "step", "") == "enable" and getattr(r, "extension", "") == "a"
    )
    assert enable.handler == "Test.Ext"  # type: ignore[attr-defined]
    assert enable.extension == "a"  # type: ignore[attr-defined]
    assert enable.operation == "enable"  # type: ignore[attr-defined]
    assert enable.levelno == logging.DEBUG
    failed = next(r for r in steps if getattr(r, "extension", "") == "bad")
    assert failed.levelno == logging.WARNING
    assert failed.code == 1009  # type: ignore[attr-defined]
    runtime_lines = [r.getMessage() for r in caplog.records if r.name == "exthandler"]
    assert any(f"{not_a_dir}" in line for line in runtime_lines)


def test_cli_plan_lists_the_steps_and_apply_sums_them_up(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Bad", "1.0.0", actions={"enable": "exit 3"})
    document = {"extensions": [ext("a"), ext("b", type_="Bad")]}
    agent.goal_path.write_text(json.dumps(document))
    where = ("--state-dir", str(agent.state), "--repo", str(agent.repo))
    code, out = agent.cli("plan", str(agent.goal_path), *where)
    assert code == 0
    assert out.splitlines()[:3] == [
        "  1. fetch Test.Ext 1.0.0: not installed",
        "  2. install Test.Ext 1.0.0: not installed",
        "  3. enable Test.Ext 1.0.0 (a): not enabled yet",
    ]
    assert agent.ops() == []  # nothing ran
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    capsys.readouterr()
    code, _ = agent.apply(document)
    assert code == 1
    err = capsys.readouterr().err
    assert "exthandler: 4 steps ran: 2 install, 2 enable; 1 extension failed" in err
    code, out = agent.cli("plan", str(agent.goal_path), *where, "--json")
    assert code == 0
    assert json.loads(out)["steps"] == []  # a failure stands until the goal changes
    agent.apply({"extensions": [ext("a")]})
    capsys.readouterr()
    agent.apply({"extensions": [ext("a")]})
    assert "exthandler: nothing to do" in capsys.readouterr().err
