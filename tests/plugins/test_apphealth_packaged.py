"""Application Health packaged as a classic zip: under a stand-in agent with nothing but a
bare `python3` on PATH, and under the runtime's process executor, where it shows the same
instance view as in process."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exthandler_plugins.apphealth import ApplicationHealth
from exthandler_plugins.apphealth._handler import SECOND_VARIABLE
from exthandler_sdk._package import build_package

from exthandler import InstanceView
from exthandler.testing import Agent
from tests.plugins.apphealth_support import (
    HANDLER,
    HEALTHY,
    SECOND,
    UNHEALTHY,
    answer,
    kill_workers,
    listen,
    read_status,
    running,
    serve,
    wait_state,
    worker_identity,
    worker_records,
)
from tests.sdk.standin_agent import StandinAgent, clean_path

SPEC = "exthandler_plugins.apphealth:ApplicationHealth"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(ApplicationHealth, SPEC, tmp_path_factory.mktemp("repo"))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_workers(tmp_path)


def test_under_a_bare_python3(tmp_path: Path, package: Path, workers: None) -> None:
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    assert "lib/exthandler_plugins/apphealth/_probe.py" in names
    assert "lib/exthandler_sdk/_workers.py" in names
    agent = StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")
    assert agent.base_env["PATH"] == clean_path()
    agent.base_env[SECOND_VARIABLE] = SECOND
    with serve() as app:
        app.answers["/health"] = answer(HEALTHY)
        handler_dir = agent.install_and_enable(
            package, 0, {"protocol": "http", "port": app.port, "requestPath": "/health"}
        )
        enable = agent.commands[-1]
        assert (enable.exit_code, enable.stdout, enable.stderr) == (0, "", "")
        path = handler_dir / "status" / "0.status"
        wait_state(path, "Healthy")
        records = worker_records(handler_dir)
        assert len(records) == 1
        identity = worker_identity(records[0])
        assert running(identity)
        app.answers["/health"] = answer(UNHEALTHY)
        wait_state(path, "Unhealthy")
        # A new sequence number: the worker is replaced.
        agent.enable(handler_dir, 1, {"protocol": "http", "port": app.port, "requestPath": "/x"})
        assert not running(identity)
        wait_state(handler_dir / "status" / "1.status", "Unknown")
        replaced = worker_identity(worker_records(handler_dir)[0])
        assert running(replaced)
        assert agent.disable(handler_dir, 1) is not None
    assert not running(replaced)
    status = read_status(handler_dir / "status" / "1.status")
    assert status is not None
    assert status["status"]["formattedMessage"]["message"] == "Disable succeeded"


def _view_of(agent: Agent, port: int) -> InstanceView:
    settings = {"protocol": "tcp", "port": port}
    document = {
        "extensions": [
            {
                "name": "health",
                "publisher": "Microsoft.ManagedServices",
                "type": "ApplicationHealthLinux",
                "typeHandlerVersion": "2.0",
                "settings": settings,
            }
        ]
    }
    agent.apply(document)
    path = agent.handler_dir(HANDLER, ApplicationHealth.version) / "status" / "0.status"
    wait_state(path, "Healthy")
    return agent.apply(document)  # a new runtime reads what the worker wrote


def _shown(view: InstanceView) -> dict[str, Any]:
    extension = view.extensions[0]
    status = extension.statuses[0]
    return {
        "status": (status.code, status.level),
        "substatus": [(s.code, s.level, s.message) for s in extension.substatuses],
    }


def _unpacked(agent: Agent) -> bool:
    """Whether the handler ran from its package's commands (not in process)."""
    return (agent.handler_dir(HANDLER, ApplicationHealth.version) / "bin" / "enable").exists()


def test_the_same_instance_view_in_process_and_packaged(
    tmp_path: Path, package: Path, monkeypatch: pytest.MonkeyPatch, workers: None
) -> None:
    monkeypatch.setenv(SECOND_VARIABLE, SECOND)
    listener = listen()
    try:
        with Agent(root=tmp_path / "in-process") as inprocess:
            inprocess.add_handler(ApplicationHealth)
            shown = _shown(_view_of(inprocess, listener.port))
            assert not _unpacked(inprocess)
        with Agent(root=tmp_path / "packaged") as packaged:
            packaged.add_package(package)
            assert _shown(_view_of(packaged, listener.port)) == shown
            assert _unpacked(packaged)
    finally:
        listener.close()
    assert shown["substatus"] == [
        ("ComponentStatus/AppHealthStatus/succeeded", "Info", "Application found to be healthy"),
        ("ComponentStatus/ApplicationHealthState/succeeded", "Info", "Healthy"),
        # The runtime's own entry for the heartbeat the worker writes.
        ("ComponentStatus/Heartbeat/Ready", "Info", "Application health: Healthy"),
    ]
