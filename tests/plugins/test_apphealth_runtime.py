"""Application Health under the runtime, in process, through the kit's `exthandler_agent`:
the states a real local application goes through, the worker's life (kept, replaced,
stopped, restarted after a reboot, upgraded), settings errors, and the docs' example."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import exthandler_plugins
import pytest
from exthandler_plugins.apphealth import ApplicationHealth
from exthandler_plugins.apphealth._handler import SECOND_VARIABLE

from exthandler import InstanceView
from exthandler._model import HandlerName
from exthandler._packages.builtin import missing_handler_hint
from exthandler._plugins import load_object
from exthandler.testing import Agent, check_lifecycle
from tests.plugins.apphealth_support import (
    HANDLER,
    HEALTHY,
    SECOND,
    UNHEALTHY,
    Answer,
    answer,
    bound,
    free_port,
    health,
    kill_workers,
    listen,
    read_status,
    running,
    self_signed,
    serve,
    wait_for,
    wait_state,
    worker_identity,
    worker_records,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION = "health"


class Previous(ApplicationHealth):
    """An older version, to upgrade from."""

    version = "1.9.0"


@pytest.fixture(autouse=True)
def _fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECOND_VARIABLE, SECOND)


@pytest.fixture
def agent(exthandler_agent: Agent) -> Iterator[Agent]:
    exthandler_agent.add_handler(ApplicationHealth)
    try:
        yield exthandler_agent
    finally:
        kill_workers(exthandler_agent.root)


def goal(settings: dict[str, Any], version: str = "2.0", **extra: Any) -> dict[str, Any]:
    return {
        "extensions": [
            {
                "name": EXTENSION,
                "publisher": "Microsoft.ManagedServices",
                "type": "ApplicationHealthLinux",
                "typeHandlerVersion": version,
                "settings": settings,
                **extra,
            }
        ]
    }


def status_path(agent: Agent, seq: int = 0, version: str = ApplicationHealth.version) -> Path:
    return agent.handler_dir(HANDLER, version) / "status" / f"{seq}.status"


def substatus(view: InstanceView) -> dict[str, tuple[str, str]]:
    return {s.code.split("/")[1]: (s.code, s.message) for s in view.extensions[0].substatuses}


def transitions(agent: Agent) -> list[str]:
    """The states the worker(s) reported, in order, from the handler's log."""
    found: list[str] = []
    for log in sorted(agent.root.rglob("ApplicationHealthLinux.log*")):
        found += re.findall(r"application health: (\w+) \(", log.read_text())
    return found


def the_worker(agent: Agent) -> int:
    records = worker_records(agent.root)
    assert len(records) == 1, records
    identity = worker_identity(records[0])
    assert identity is not None
    return identity.pid


def test_registered_through_the_entry_point_hook_and_known_as_builtin() -> None:
    paths = exthandler_plugins.exthandler_handler_paths()
    assert load_object(paths[ApplicationHealth.name]) is ApplicationHealth
    assert ApplicationHealth.name == "Microsoft.ManagedServices.ApplicationHealthLinux"
    assert ApplicationHealth.version.startswith("2.0.")
    hint = missing_handler_hint(HandlerName.parse(HANDLER.lower()))
    assert "exthandler-plugins" in hint


def test_tcp_initializing_then_healthy_then_unhealthy(agent: Agent) -> None:
    listener = bound()  # refuses connections: Initializing for the whole grace period
    try:
        settings = {"protocol": "tcp", "port": listener.port, "gracePeriod": 14400}
        view = agent.apply(goal(settings))
        entry = view.extensions[0].statuses[0]
        assert entry.code == "ProvisioningState/succeeded"
        assert substatus(view) == {
            "AppHealthStatus": (
                "ComponentStatus/AppHealthStatus/transitioning",
                "Application found to be unhealthy",
            ),
            "ApplicationHealthState": (
                "ComponentStatus/ApplicationHealthState/succeeded",
                "Initializing",
            ),
        }
        path = status_path(agent)
        listener.start()
        assert wait_state(path, "Healthy") == ("Application found to be healthy", "Healthy")
        assert listener.accepted >= 1
    finally:
        listener.close()
    assert wait_state(path, "Unhealthy") == ("Application found to be unhealthy", "Unhealthy")
    assert transitions(agent) == ["Healthy", "Unhealthy"]
    heartbeat = json.loads((agent.handler_dir(HANDLER, "2.0.0") / "heartbeat.log").read_text())
    assert heartbeat[0]["heartbeat"]["status"] == "NotReady"
    # The runtime shows what the worker wrote.
    view = agent.apply(goal(settings))
    assert substatus(view)["ApplicationHealthState"][1] == "Unhealthy"
    assert substatus(view)["AppHealthStatus"] == (
        "ComponentStatus/AppHealthStatus/failed",
        "Application found to be unhealthy",
    )


def test_http_states_follow_what_the_application_answers(agent: Agent) -> None:
    with serve() as app:
        app.answers["/health?deep=1"] = answer(HEALTHY)
        agent.apply(goal({"protocol": "http", "port": app.port, "requestPath": "health?deep=1"}))
        path = status_path(agent)
        wait_state(path, "Healthy")
        host = app.hits[0][1]["host"]
        assert host == f"localhost:{app.port}"
        app.answers["/health?deep=1"] = answer(UNHEALTHY)
        assert wait_state(path, "Unhealthy")[0] == "Application found to be unhealthy"
        app.answers["/health?deep=1"] = answer(HEALTHY)
        wait_state(path, "Healthy")
        app.answers["/health?deep=1"] = answer(HEALTHY, code=503)
        assert wait_state(path, "Unknown")[0] == "Application found to be unhealthy"
        status = read_status(path)
        assert status is not None
        assert status["status"]["status"] == "success"
        assert "answered HTTP 503" in status["status"]["formattedMessage"]["message"]
        app.answers["/health?deep=1"] = answer(HEALTHY)
        wait_state(path, "Healthy")
        app.answers["/health?deep=1"] = Answer(body=b"<html>fine</html>")
        wait_state(path, "Unknown")
        app.answers["/health?deep=1"] = answer(HEALTHY)
        wait_state(path, "Healthy")
        app.answers["/health?deep=1"] = answer({"ApplicationHealthState": "Busy"})
        wait_state(path, "Unknown")
    assert transitions(agent) == [
        "Healthy",
        "Unhealthy",
        "Healthy",
        "Unknown",
        "Healthy",
        "Unknown",
        "Healthy",
        "Unknown",
    ]


def test_a_redirect_is_not_followed(agent: Agent) -> None:
    with serve() as app:
        app.answers["/health"] = Answer(code=302, headers={"Location": "/elsewhere"})
        app.answers["/elsewhere"] = answer(HEALTHY)
        agent.apply(
            goal({"protocol": "http", "port": app.port, "requestPath": "/health", "gracePeriod": 5})
        )
        wait_state(status_path(agent), "Unknown")
        assert app.count("/elsewhere") == 0
        assert app.count("/health") >= 1


def test_https_accepts_a_self_signed_certificate(agent: Agent, tmp_path: Path) -> None:
    with serve("https", self_signed(tmp_path)) as app:
        app.answers["/"] = answer(HEALTHY)
        agent.apply(goal({"protocol": "https", "port": app.port}))
        assert wait_state(status_path(agent), "Healthy") == (
            "Application found to be healthy",
            "Healthy",
        )
        assert app.hits[0][0] == "/"


def test_number_of_probes_must_agree_before_the_state_changes(agent: Agent) -> None:
    """One unhealthy answer among healthy ones changes nothing; two in a row do."""
    with serve() as app:
        app.answers["/"] = answer(HEALTHY)
        agent.apply(goal({"protocol": "http", "port": app.port, "numberOfProbes": 2}))
        path = status_path(agent)
        wait_state(path, "Healthy")
        app.script["/"] = [answer(UNHEALTHY)]  # served once, then healthy again
        wait_for(lambda: app.pending("/") == 0, what="the unhealthy answer")
        served = len(app.hits)
        wait_for(lambda: len(app.hits) >= served + 3, what="three more healthy answers")
        assert transitions(agent) == ["Healthy"]
        app.answers["/"] = answer(UNHEALTHY)
        wait_state(path, "Unhealthy")
    assert transitions(agent) == ["Healthy", "Unhealthy"]


def test_initializing_lasts_the_grace_period_unless_healthy(agent: Agent) -> None:
    port = free_port()
    # 14400 settings seconds: far beyond this test. Nothing listens: every probe fails.
    agent.apply(goal({"protocol": "tcp", "port": port, "gracePeriod": 14400}))
    path = status_path(agent)
    wait_for(lambda: "last probe" in _message(path), what="a probe's report")
    wait_for(lambda: _refreshes(agent) >= 2, what="two refreshes")
    assert health(path) == ("Application found to be unhealthy", "Initializing")
    assert transitions(agent) == []
    # Healthy ends the grace period at once.
    listener = listen()
    try:
        agent.apply(goal({"protocol": "tcp", "port": listener.port, "gracePeriod": 14400}))
        wait_state(status_path(agent, 1), "Healthy")
    finally:
        listener.close()


def _message(path: Path) -> str:
    status = read_status(path)
    return "" if status is None else str(status["status"]["formattedMessage"]["message"])


def _refreshes(agent: Agent) -> int:
    """How many times the worker rewrote an unchanged state (from the handler's log)."""
    return sum(
        log.read_text().count("still ") for log in agent.root.rglob("ApplicationHealthLinux.log*")
    )


def test_lifecycle_with_an_upgrade(agent: Agent) -> None:
    agent.add_handler(Previous)
    listener = listen()
    try:
        check_lifecycle(
            agent,
            ApplicationHealth,
            previous=Previous,
            settings={"protocol": "tcp", "port": listener.port},
            extension=EXTENSION,
        )
    finally:
        listener.close()
    # Uninstalled at the end: no worker of any version is left running.
    assert not any(running(worker_identity(r)) for r in worker_records(agent.root))


def test_the_worker_is_kept_replaced_stopped_and_restarted_after_a_reboot(agent: Agent) -> None:
    listener = listen()
    try:
        settings = {"protocol": "tcp", "port": listener.port}
        agent.apply(goal(settings))
        wait_state(status_path(agent), "Healthy")
        first = the_worker(agent)
        # Enabled again with the same sequence number (a new forceUpdateTag): the same
        # worker, and the status still says Healthy.
        agent.take_commands()
        view = agent.apply(goal(settings, forceUpdateTag="again"))
        assert [c.operation for c in agent.take_commands()] == ["enable"]
        assert view.extensions[0].sequence_number == 0
        assert the_worker(agent) == first
        assert substatus(view)["ApplicationHealthState"][1] == "Healthy"
        # New settings, a new sequence number: a new worker reports for it.
        agent.apply(goal({**settings, "numberOfProbes": 2}))
        wait_state(status_path(agent, 1), "Healthy")
        second = the_worker(agent)
        assert second != first
        assert not running(_identity(first))
        # Disabled: the worker is stopped before the disable reports.
        view = agent.apply(goal({**settings, "numberOfProbes": 2}, state="disabled"))
        assert not running(_identity(second))
        assert worker_records(agent.root) == []
        assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
        assert "Disable" in view.extensions[0].statuses[0].message
        # Enabled again: a new worker.
        agent.apply(goal({**settings, "numberOfProbes": 2}))
        third = the_worker(agent)
        assert third not in (first, second)
        wait_state(status_path(agent, 1), "Healthy")
        # The machine goes down (and the worker with it), then boots: enable starts it again.
        kill_workers(agent.root)
        wait_for(lambda: not running(_identity(third)), what="the worker's end")
        agent.reboot()
        agent.apply(goal({**settings, "numberOfProbes": 2}))
        fourth = the_worker(agent)
        assert fourth != third
        assert running(_identity(fourth))
        wait_state(status_path(agent, 1), "Healthy")
    finally:
        listener.close()


def _identity(pid: int) -> Any:
    from exthandler_sdk.procs import identify

    return identify(pid)


def test_bad_settings_are_53_with_every_field_and_start_nothing(agent: Agent) -> None:
    view = agent.apply(
        goal(
            {
                "protocol": "ftp",
                "port": 70000,
                "requestPath": "http://example.com/x",
                "intervalInSeconds": 2,
                "numberOfProbes": 0,
                "gracePeriod": 1,
            }
        )
    )
    entry = view.extensions[0].statuses[0]
    assert entry.code == "ProvisioningState/failed/53"
    assert entry.message.splitlines()[:7] == [
        "invalid settings:",
        "protocol: must be one of tcp, http, https, got 'ftp'",
        "port: must be from 1 to 65535, got 70000",
        "requestPath: a path on localhost such as /health, not a URL "
        "('http://example.com/x'): the probe only ever asks localhost",
        "intervalInSeconds: must be from 5 to 60, got 2",
        "numberOfProbes: must be from 1 to 24, got 0",
        "gracePeriod: must be from 5 to 14400, got 1",
    ]
    assert worker_records(agent.root) == []
    view = agent.apply(goal({"protocol": "tcp", "port": "eighty", "numberOfProbes": [1]}))
    entry = view.extensions[0].statuses[0]
    assert entry.code == "ProvisioningState/failed/53"
    assert "settings.port: " in entry.message
    assert "settings.numberOfProbes: " in entry.message
    view = agent.apply(goal({"protocol": "tcp", "requestPath": "/x"}))
    assert view.extensions[0].statuses[0].message.splitlines()[1:3] == [
        "port: required with the tcp protocol",
        "requestPath: only for the http and https protocols, not tcp",
    ]
    assert worker_records(agent.root) == []


def _example_goal() -> dict[str, Any]:
    page = (REPO_ROOT / "docs" / "apphealth.md").read_text(encoding="utf-8")
    block = page.split("<!-- example goal state -->", 1)[1].split("```json\n", 1)[1]
    document = json.loads(block.split("```", 1)[0])
    assert isinstance(document, dict)
    return document


def test_the_docs_example_goal_state(agent: Agent) -> None:
    document = _example_goal()
    settings = document["extensions"][0]["settings"]
    with serve() as app:
        app.answers[settings["requestPath"]] = answer(HEALTHY)
        settings["port"] = app.port  # the page's port, 8080, is this machine's to use
        view = agent.apply(document)
        assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
        assert set(substatus(view)) == {"AppHealthStatus", "ApplicationHealthState"}
        wait_state(status_path(agent), "Healthy")
