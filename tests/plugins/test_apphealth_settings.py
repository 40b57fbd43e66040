"""Application Health's settings: defaults, what is normalised, and every refusal."""

from __future__ import annotations

import pytest
from exthandler_plugins.apphealth import ApplicationHealthSettings
from exthandler_plugins.apphealth._settings import Plan, resolve
from exthandler_sdk import HandlerError


def test_defaults() -> None:
    assert resolve(ApplicationHealthSettings(protocol="TCP", port=22)) == Plan(
        protocol="tcp", port=22, request_path=None, interval=5, probes=1, grace=5
    )
    assert resolve(ApplicationHealthSettings(protocol="http")) == Plan(
        protocol="http", port=80, request_path="/", interval=5, probes=1, grace=5
    )
    plan = resolve(
        ApplicationHealthSettings(
            protocol="https", requestPath="health?x=1", intervalInSeconds=60, numberOfProbes=24
        )
    )
    assert (plan.port, plan.request_path, plan.grace) == (443, "/health?x=1", 60 * 24)
    assert plan.target == "https://localhost:443/health?x=1"
    assert (
        resolve(ApplicationHealthSettings(protocol="tcp", port=1, gracePeriod=14400)).grace == 14400
    )


def _errors(**settings: object) -> list[str]:
    with pytest.raises(HandlerError) as caught:
        resolve(ApplicationHealthSettings(**settings))  # type: ignore[arg-type]
    assert caught.value.code == 53
    lines = caught.value.message.splitlines()
    return lines[1:] if lines[0] == "invalid settings:" else lines


@pytest.mark.parametrize(
    ("settings", "errors"),
    [
        ({}, ["protocol: required: one of tcp, http, https"]),
        ({"protocol": "udp", "port": 1}, ["protocol: must be one of tcp, http, https, got 'udp'"]),
        ({"protocol": "tcp"}, ["port: required with the tcp protocol"]),
        ({"protocol": "http", "port": 0}, ["port: must be from 1 to 65535, got 0"]),
        (
            {"protocol": "tcp", "port": 80, "requestPath": "/"},
            ["requestPath: only for the http and https protocols, not tcp"],
        ),
        (
            {"protocol": "http", "requestPath": "//evil.example/x"},
            [
                "requestPath: a path on localhost such as /health, not a URL "
                "('//evil.example/x'): the probe only ever asks localhost"
            ],
        ),
        (
            {"protocol": "http", "requestPath": "/a b"},
            ["requestPath: must not hold spaces or control characters"],
        ),
        (
            {"protocol": "http", "requestPath": "/a#b"},
            ["requestPath: must not hold a fragment ('#')"],
        ),
        (
            {"protocol": "http", "requestPath": "/" * 2049},
            ["requestPath: longer than 2048 characters"],
        ),
        (
            {"protocol": "http", "intervalInSeconds": 61},
            ["intervalInSeconds: must be from 5 to 60, got 61"],
        ),
        (
            {"protocol": "http", "intervalInSeconds": 0},
            ["intervalInSeconds: must be from 5 to 60, got 0"],
        ),
        (
            {"protocol": "http", "numberOfProbes": 25},
            ["numberOfProbes: must be from 1 to 24, got 25"],
        ),
        ({"protocol": "http", "gracePeriod": 4}, ["gracePeriod: must be from 5 to 14400, got 4"]),
    ],
)
def test_refusals(settings: dict[str, object], errors: list[str]) -> None:
    assert _errors(**settings) == errors


def test_every_problem_is_listed() -> None:
    assert _errors(
        protocol="tcp", port=-1, requestPath="/x", intervalInSeconds=1, numberOfProbes=99
    ) == [
        "port: must be from 1 to 65535, got -1",
        "requestPath: only for the http and https protocols, not tcp",
        "intervalInSeconds: must be from 5 to 60, got 1",
        "numberOfProbes: must be from 1 to 24, got 99",
    ]


def test_no_settings_at_all() -> None:
    with pytest.raises(HandlerError, match="protocol: required"):
        resolve(None)
