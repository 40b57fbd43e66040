"""Application Health when things go wrong around it: a disable that fails, or a worker
that dies, never leaves a probe reporting for an extension that is not enabled."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from exthandler_plugins.apphealth import ApplicationHealth
from exthandler_plugins.apphealth._handler import SECOND_VARIABLE

from exthandler.testing import Agent, Fault
from tests.plugins.apphealth_support import (
    HANDLER,
    SECOND,
    kill_workers,
    listen,
    running,
    wait_for,
    wait_state,
    worker_identity,
    worker_records,
)


@pytest.fixture(autouse=True)
def _fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECOND_VARIABLE, SECOND)


@pytest.fixture
def agent(exthandler_agent: Agent) -> Iterator[Agent]:
    try:
        yield exthandler_agent
    finally:
        kill_workers(exthandler_agent.root)


def goal(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "extensions": [
            {
                "name": "health",
                "publisher": "Microsoft.ManagedServices",
                "type": "ApplicationHealthLinux",
                "typeHandlerVersion": "2.0",
                "settings": {"protocol": "tcp", "port": port},
                **extra,
            }
        ]
    }


def test_a_failing_disable_still_stops_the_probe(agent: Agent) -> None:
    agent.add_handler(ApplicationHealth, fault=Fault.exit("disable", code=7))
    listener = listen()
    try:
        agent.apply(goal(listener.port))
        path = agent.handler_dir(HANDLER, ApplicationHealth.version) / "status" / "0.status"
        wait_state(path, "Healthy")
        [record] = worker_records(agent.root)
        identity = worker_identity(record)
        assert running(identity)
        view = agent.apply(goal(listener.port, state="disabled"))
    finally:
        listener.close()
    assert view.extensions[0].statuses[0].code.endswith("/7")
    assert not running(identity)
    assert worker_records(agent.root) == []


def test_a_worker_that_died_is_forgotten_by_disable(agent: Agent) -> None:
    agent.add_handler(ApplicationHealth)
    listener = listen()
    try:
        agent.apply(goal(listener.port))
        [record] = worker_records(agent.root)
        identity = worker_identity(record)
        assert identity is not None
        os.killpg(identity.pid, signal.SIGKILL)
        wait_for(lambda: not running(identity), what="the worker's death")
        view = agent.apply(goal(listener.port, state="disabled"))
    finally:
        listener.close()
    status = view.extensions[0].statuses[0]
    assert (status.code, status.message) == ("ProvisioningState/succeeded", "Disable succeeded")
    assert worker_records(agent.root) == []
