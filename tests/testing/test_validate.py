"""The strict status and heartbeat checks: every problem named by its path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exthandler.testing import validate_heartbeat, validate_status


def status(**body: Any) -> bytes:
    base: dict[str, Any] = {
        "status": "success",
        "code": 0,
        "formattedMessage": {"lang": "en-US", "message": "ok"},
    }
    base.update(body)
    return json.dumps(
        [{"version": 1.0, "timestampUTC": "2026-11-25T12:00:00Z", "status": base}]
    ).encode()


def test_a_valid_status_has_no_problems() -> None:
    assert validate_status(status()) == []
    assert validate_status(status(substatus=None)) == []
    with_sub = status(
        substatus=[
            {"name": "StdOut", "status": "success", "code": 0,
             "formattedMessage": {"lang": "en-US", "message": "hi"}}
        ]
    )  # fmt: skip
    assert validate_status(with_sub) == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff", "$: not UTF-8"),
        (b"{", "$: not valid JSON"),
        (b'{"status": 1}', "$: a JSON dict, not an array"),
        (b"[]", "$: an empty array"),
        (b"[1]", "$[0]: not an object"),
        (b'[{"timestampUTC": "2026-11-25T12:00:00Z"}]', "$[0].status: missing or not an object"),
        (status(status="ok"), "$[0].status.status: 'ok' is not one of transitioning"),
        (status(status="Success"), "$[0].status.status: 'Success' is not one of"),
        (status(code="0"), "$[0].status.code: '0' is not an integer"),
        (status(code=True), "$[0].status.code: True is not an integer"),
        (status(formattedMessage="hi"), "$[0].status.formattedMessage: missing or not an object"),
        (status(formattedMessage={"message": "x"}), "$[0].status.formattedMessage.lang: missing"),
        (status(formattedMessage={"lang": "en"}), "$[0].status.formattedMessage.message: missing"),
        (
            status(formattedMessage={"lang": "en", "message": "x" * 1025}),
            "$[0].status.formattedMessage.message: 1025 characters, over the limit of 1024",
        ),
        (status(substatus={}), "$[0].status.substatus: not an array"),
        (status(substatus=[1]), "$[0].status.substatus[0]: not an object"),
        (
            status(substatus=[{"name": 1, "status": "success"}]),
            "$[0].status.substatus[0].name: missing or not a string",
        ),
        (
            status(substatus=[{"name": "n" * 10241, "status": "x"}]),
            "$[0].status.substatus[0].name: 10241 characters",
        ),
        (
            status(substatus=[{"name": "a", "status": "bad"}]),
            "$[0].status.substatus[0].status: 'bad' is not one of",
        ),
        (
            status(substatus=[{"name": "a", "status": "error", "code": 1.5}]),
            "$[0].status.substatus[0].code: 1.5 is not an integer",
        ),
        (
            status(substatus=[{"name": "a", "status": "error"}]),
            "$[0].status.substatus[0].formattedMessage: missing",
        ),
        (
            b'[{"timestampUTC": "25/11/2026", "status": {"status": "success",'
            b' "formattedMessage": {"lang": "en", "message": ""}}}]',
            "$[0].timestampUTC: '25/11/2026' is not like 2026-11-25T12:00:00Z",
        ),
    ],
)
def test_each_problem_is_named(data: bytes, problem: str) -> None:
    problems = validate_status(data)
    assert any(p.startswith(problem) for p in problems), problems


def test_size_limit_and_bom() -> None:
    big = status(formattedMessage={"lang": "en", "message": "x" * (130 * 1024)})
    assert any("over the limit of 131072" in p for p in validate_status(big))
    bom = "\ufeff".encode() + status()
    assert validate_status(bom) == [
        "$: starts with a byte-order mark (agents tolerate it; write none)"
    ]


def heartbeat(**body: Any) -> bytes:
    base: dict[str, Any] = {
        "status": "Ready",
        "code": 0,
        "formattedMessage": {"lang": "en", "message": ""},
    }
    base.update(body)
    return json.dumps([{"version": "1.0", "heartbeat": base}]).encode()


def test_heartbeat() -> None:
    assert validate_heartbeat(heartbeat()) == []
    assert validate_heartbeat(heartbeat(status="ready"))[0].startswith("$[0].heartbeat.status:")
    assert validate_heartbeat(b"nope")[0].startswith("$: not valid JSON")
    assert validate_heartbeat(b"{}") == ["$: not a JSON array whose element 0 is an object"]
    assert validate_heartbeat(b"[{}]") == ["$[0].heartbeat: missing or not an object"]
