"""The step hooks carry what an observer needs: each command's operation, protocol
variables, exit code and duration, so that nobody has to read the runtime's logs."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
from exthandler_sdk import Operation, hookimpl

from exthandler import RuntimeConfig, StepResult, load_goal_state, open_runtime
from exthandler._plan.planner import Step
from tests.runtime.support import Agent, Packages, extension, goal


class Results:
    """Takes only the new argument: pluggy passes an implementation what it names."""

    def __init__(self) -> None:
        self.results: list[StepResult] = []

    @hookimpl
    def exthandler_step_finished(self, result: StepResult) -> None:
        self.results.append(result)


class Legacy:
    """An implementation written before `result` existed keeps working."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, str]] = []

    @hookimpl
    def exthandler_step_finished(self, step: Step, ok: bool, message: str) -> None:
        self.seen.append((step.describe(), ok, message))


def apply(agent: Agent, document: dict[str, Any], *plugins: object) -> None:
    agent.goal_path.write_text(json.dumps(document))
    config = RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        plugins=plugins,
        load_entry_points=False,
        boot_id_path=agent.root / "boot_id",
        concurrency=1,
    )

    async def main() -> None:
        async with open_runtime(config) as runtime:
            await runtime.apply(load_goal_state(agent.goal_path))

    anyio.run(main)


def test_each_command_reports_the_variables_it_was_given(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Ext", "1.0.1")
    packages.build("Test.Bad", "1.0.0", actions={"enable": "echo broken >&2; exit 3"})
    results, legacy = Results(), Legacy()
    apply(
        agent,
        goal(extension("ext", version="1.0.0", useExactVersion=True), extension("bad", "Test.Bad")),
        results,
        legacy,
    )
    apply(agent, goal(extension("ext", version="1.0.1", useExactVersion=True)), results)

    ran = agent.take_ops()
    commands = [r for r in results.results if r.operation is not None]
    # Every command, in order, with exactly the protocol variables the command saw.
    assert [f"{r.operation} {r.handler}-{r.version}" for r in commands] == [op.short for op in ran]
    assert [dict(r.env) for r in commands] == [dict(op.env) for op in ran]
    update = next(r for r in commands if r.operation is Operation.UPDATE)
    assert update.env["VERSION"] == "1.0.1"
    assert update.env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.0"
    assert update.env["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "0"
    enable = next(r for r in commands if r.kind == "enable" and r.extension == "ext")
    assert (enable.kind, enable.extension, enable.ok, enable.exit_code, enable.code) == (
        "enable",
        "ext",
        True,
        "0",
        0,
    )
    assert enable.env["ConfigSequenceNumber"] == "0"
    failed = next(r for r in commands if str(r.handler) == "Test.Bad" and r.kind == "enable")
    assert (failed.ok, failed.exit_code, failed.code) == (False, "3", 1009)
    assert "exit code 3" in failed.message
    assert "broken" in failed.message
    # Steps that run no command say so, with no variables.
    fetches = [r for r in results.results if r.kind == "fetch"]
    assert [f"{r.handler}-{r.version}" for r in fetches] == [
        "Test.Ext-1.0.0",
        "Test.Bad-1.0.0",
        "Test.Ext-1.0.1",
    ]
    assert all(r.operation is None and r.exit_code == "NOT_RUN" and not r.env for r in fetches)
    assert all(r.duration >= 0 and math.isfinite(r.duration) for r in results.results)
    # The older three-argument implementation saw the same steps of the first apply.
    first = results.results[: len(legacy.seen)]
    assert [(ok, message) for _, ok, message in legacy.seen] == [(r.ok, r.message) for r in first]


def test_a_result_is_a_value() -> None:
    from exthandler import HandlerName, Version

    fields: dict[str, Any] = {
        "kind": "enable",
        "handler": HandlerName.parse("P.T"),
        "version": Version.parse("1.0"),
        "extension": None,
        "operation": Operation.ENABLE,
        "ok": True,
        "exit_code": "0",
        "code": 0,
        "message": "",
        "duration": 0.5,
    }
    env = {"ConfigSequenceNumber": "1"}
    one = StepResult(**fields, env=env)
    env["ConfigSequenceNumber"] = "2"  # the result keeps its own copy
    assert one.env == {"ConfigSequenceNumber": "1"}
    assert one == StepResult(**fields, env={"ConfigSequenceNumber": "1"})
    assert hash(one) == hash(StepResult(**fields, env={"ConfigSequenceNumber": "1"}))
