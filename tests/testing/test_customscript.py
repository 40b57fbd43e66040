"""The built-in CustomScript handler, tested with the kit's fixtures."""

from __future__ import annotations

import pytest

from exthandler.testing import Agent, Harness, check_lifecycle

customscript = pytest.importorskip("exthandler_plugins.customscript")
CustomScript = customscript.CustomScript


def test_enable_runs_the_command(exthandler_harness: Harness) -> None:
    result = exthandler_harness.run(CustomScript, settings={"commandToExecute": "echo hello"})
    result.assert_success()
    assert result.status is not None
    stdout = [s for s in result.status.substatus if s.name == "StdOut"]
    assert stdout
    assert "hello" in stdout[0].message


def test_a_protected_command_and_a_failing_one(exthandler_harness: Harness) -> None:
    secret = exthandler_harness.run(
        CustomScript, settings={}, protected_settings={"commandToExecute": "echo from-secret"}
    )
    secret.assert_success()
    assert "from-secret" not in (secret.handler_dir / "config" / "0.settings").read_text()
    failing = exthandler_harness.run(
        CustomScript, settings={"commandToExecute": "echo oops >&2; exit 3"}, sequence=1
    )
    failing.assert_valid_status()
    assert failing.status is not None
    assert failing.status.status == "error"
    assert failing.exit_code != 0


def test_lifecycle(exthandler_agent: Agent) -> None:
    check_lifecycle(
        exthandler_agent,
        CustomScript,
        settings={"commandToExecute": "true"},
        extension="customScript",
    )
