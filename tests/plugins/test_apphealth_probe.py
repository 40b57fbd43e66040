"""One probe against real local servers, and the states consecutive probes add up to."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from exthandler_plugins.apphealth import HealthState
from exthandler_plugins.apphealth._probe import BODY_LIMIT, StateMachine, probe
from exthandler_plugins.apphealth._settings import Plan

from tests.plugins.apphealth_support import (
    HEALTHY,
    UNHEALTHY,
    Answer,
    answer,
    free_port,
    listen,
    self_signed,
    serve,
)

H, U, K = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # what a worker runs on


def plan(protocol: str, port: int, path: str | None = "/") -> Plan:
    return Plan(
        protocol=protocol,
        port=port,
        request_path=None if protocol == "tcp" else path,
        interval=5,
        probes=1,
        grace=5,
    )


@pytest.mark.anyio
async def test_tcp() -> None:
    listener = listen()
    try:
        result = await probe(plan("tcp", listener.port), 5.0)
        assert result.state is H
        assert result.detail == f"port {listener.port} accepts connections"
    finally:
        listener.close()
    refused = await probe(plan("tcp", listener.port), 5.0)
    assert refused.state is U
    assert refused.detail.startswith(f"cannot connect to port {listener.port}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "state", "detail"),
    [
        (answer(HEALTHY), H, "answered HTTP 200, ApplicationHealthState Healthy"),
        (answer({"ApplicationHealthState": "healthy", "x": 1}), H, "Healthy"),
        (answer(HEALTHY, code=201), H, "answered HTTP 201"),
        (answer(UNHEALTHY), U, "answered HTTP 200, ApplicationHealthState Unhealthy"),
        (answer(HEALTHY, code=500), K, "answered HTTP 500"),
        (answer(HEALTHY, code=404), K, "answered HTTP 404"),
        (Answer(code=301, headers={"Location": "/ok"}), K, "answered HTTP 301"),
        (Answer(body=b"OK"), K, "without a JSON body"),
        (answer(["Healthy"]), K, 'without "ApplicationHealthState"'),
        (answer({"ApplicationHealthState": 1}), K, 'without "ApplicationHealthState"'),
        (answer({"state": "Healthy"}), K, 'without "ApplicationHealthState"'),
        (Answer(body=b" " * (BODY_LIMIT + 1)), K, "more than 65536 bytes"),
    ],
)
async def test_http_answers(reply: Answer, state: HealthState, detail: str) -> None:
    with serve() as app:
        app.answers["/probe"] = reply
        app.answers["/ok"] = answer(HEALTHY)
        result = await probe(plan("http", app.port, "/probe"), 5.0)
        assert app.count("/ok") == 0  # a redirect is never followed
    assert result.state is state
    assert detail in result.detail


@pytest.mark.anyio
async def test_http_without_a_server_or_an_answer_is_unknown() -> None:
    result = await probe(plan("http", free_port()), 5.0)
    assert result.state is K
    assert result.detail.startswith("no answer")
    # A server that accepts and never answers: the limit gives Unknown.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    accepting.start()
    try:
        silent = await probe(plan("http", server.getsockname()[1]), 0.2)
    finally:
        server.close()
        accepting.join(5)
        for connection in held:
            connection.close()
    assert silent.state is K
    assert silent.detail == "no answer within 0.2 s"


@pytest.mark.anyio
async def test_https_does_not_verify_the_certificate(tmp_path: Path) -> None:
    with serve("https", self_signed(tmp_path)) as app:
        app.answers["/"] = answer(HEALTHY)
        assert (await probe(plan("https", app.port), 5.0)).state is H
        # Plain http to a TLS port gets no usable answer.
        assert (await probe(plan("http", app.port), 5.0)).state is K


def run(machine: StateMachine, *found: HealthState, grace_over: bool = True) -> list[str]:
    return [machine.observe(state, grace_over).value for state in found]


def test_state_machine_initializing_until_healthy_or_the_grace_period() -> None:
    assert run(StateMachine(1), U, K, grace_over=False) == ["Initializing", "Initializing"]
    assert run(StateMachine(1), U, H, grace_over=False) == ["Initializing", "Healthy"]
    # Two healthy probes are needed to leave Initializing early when two must agree.
    assert run(StateMachine(2), H, U, H, H, grace_over=False) == [
        "Initializing",
        "Initializing",
        "Initializing",
        "Healthy",
    ]
    # At the end of the grace period the last probe decides.
    machine = StateMachine(3)
    assert run(machine, U, grace_over=False) == ["Initializing"]
    assert run(machine, K) == ["Unknown"]


def test_state_machine_changes_only_when_enough_probes_agree() -> None:
    machine = StateMachine(3)
    assert run(machine, H, H, H) == ["Healthy"] * 3
    assert run(machine, U, U, H, U, U) == ["Healthy"] * 5
    assert run(machine, U) == ["Unhealthy"]
    assert run(machine, K, K, U, K, K, K) == ["Unhealthy"] * 5 + ["Unknown"]
    assert run(StateMachine(1), H, U, K, H) == ["Healthy", "Unhealthy", "Unknown", "Healthy"]
