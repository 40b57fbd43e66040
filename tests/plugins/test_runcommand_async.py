"""`asyncExecution`: enable reports at once and the script runs in the SDK's background
worker, whose reports follow; in process and packaged alike. Disable and a new sequence
number stop what runs."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from exthandler_plugins.runcommand import RunCommand

from exthandler.testing import Agent

HANDLER = RunCommand.name
SPEC = "exthandler_plugins.runcommand:RunCommand"


def rc(name: str, text: str, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "publisher": "Microsoft.CPlat.Core",
        "type": "RunCommandHandlerLinux",
        "typeHandlerVersion": "1.3",
        "settings": {"source": {"script": text}, "asyncExecution": True, **settings},
    }


def status_file(agent: Agent, name: str, seq: int) -> Path:
    return agent.handler_dir(HANDLER, RunCommand.version) / "status" / f"{name}.{seq}.status"


def wait_for(
    what: str, check: Callable[[], Any], within: float = 120.0
) -> Any:  # the time is only a safety net against a hung test
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            found = check()
            if found:
                return found
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def reported(path: Path) -> tuple[str, dict[str, Any]]:
    status = json.loads(path.read_text())[0]["status"]
    return status["status"], json.loads(status["formattedMessage"]["message"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(params=["in process", "packaged"])
def agent(request: pytest.FixtureRequest, exthandler_agent: Agent) -> Agent:
    if request.param == "in process":
        exthandler_agent.add_handler(RunCommand)
    else:
        exthandler_agent.add_built_package(RunCommand, SPEC)
    return exthandler_agent


def test_enable_returns_at_once_and_the_status_follows(agent: Agent, tmp_path: Path) -> None:
    release = tmp_path / "release"
    text = (
        f"echo started; i=0; while [ ! -e {release} ] && [ $i -lt 2400 ]; "
        "do sleep 0.05; i=$((i+1)); done; echo finished; exit 5"
    )
    view = agent.apply({"extensions": [rc("bg", text, treatFailureAsDeploymentFailure=True)]})
    first = view.extension("bg")
    assert first is not None
    assert first.statuses[0].code == "ProvisioningState/succeeded"
    pending = json.loads(first.statuses[0].message)
    assert pending["executionState"] == "Pending"
    assert pending["executionMessage"] == "Execution continues in the background"
    assert not release.exists()  # the script is still waiting: enable did not wait for it

    path = status_file(agent, "bg", 0)
    level, running = wait_for("Running", lambda: (s := reported(path))[1]["output"] and s)
    assert (level, running["executionState"], running["output"]) == (
        "transitioning",
        "Running",
        "started\n",
    )
    release.touch()
    level, final = wait_for("the end", lambda: (s := reported(path))[0] != "transitioning" and s)
    assert level == "error"
    assert (final["executionState"], final["exitCode"]) == ("Failed", 5)
    assert final["output"] == "started\nfinished\n"
    assert final["endTime"]
    # The runtime shows what the worker reported.
    agent.take_commands()
    view = agent.apply({"extensions": [rc("bg", text, treatFailureAsDeploymentFailure=True)]})
    assert agent.take_commands() == []
    shown = view.extension("bg")
    assert shown is not None
    assert shown.statuses[0].code == "ProvisioningState/failed/5"


def test_disable_and_a_new_sequence_stop_the_running_script(agent: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    def text(tag: str) -> str:
        return f"echo $$ >> {pids}; echo {tag}; sleep 300"

    other = {**rc("other", "echo other"), "settings": {"source": {"script": "echo other"}}}
    agent.apply({"extensions": [rc("bg", text("one")), other]})
    first = int(wait_for("the first script", lambda: pids.read_text().split()[0]))
    assert alive(first)
    # A new sequence number: the worker and the script of the old one are stopped.
    agent.apply({"extensions": [rc("bg", text("two")), other]})
    second = int(wait_for("the second script", lambda: pids.read_text().split()[1]))
    wait_for("the first script to stop", lambda: not alive(first))
    assert alive(second)
    # Removing the run command disables it (only it): its script is stopped too.
    agent.take_commands()
    agent.apply({"extensions": [other]})
    assert [(c.operation, c.extension) for c in agent.take_commands()] == [("disable", "bg")]
    wait_for("the second script to stop", lambda: not alive(second))
    runs = agent.handler_dir(HANDLER, RunCommand.version) / "runcommand"
    assert sorted(p.name for p in runs.iterdir()) == ["other"]
