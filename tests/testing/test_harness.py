"""`exthandler_harness`: one operation of a handler class, with what it produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exthandler_sdk import Operation

from exthandler.testing import Harness, HarnessResult, TestingUsageError
from tests.testing.handlers import (
    Broken,
    Greeter,
    GreeterNext,
    GreeterSecrets,
    GreeterSettings,
    Plain,
    Probe,
)

SETTINGS = {"greeting": "hi", "times": 2}
SECRETS = {"token": "open-sesame"}


def test_enable_writes_status_heartbeat_events_log_and_files(exthandler_harness: Harness) -> None:
    result = exthandler_harness.run(
        Greeter, "enable", settings=SETTINGS, protected_settings=SECRETS
    )
    result.assert_success("greeted at seq 0")
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.status is not None
    assert (result.status.status, result.status.code, result.status.lang) == ("success", 0, "en-US")
    assert [(s.name, s.status, s.message) for s in result.status.substatus] == [
        ("Greeting", "success", "hi hi")
    ]
    assert result.status_document[0]["status"]["operation"] == "Enable"
    assert result.heartbeat is not None
    assert result.heartbeat["status"] == "Ready"
    result.assert_valid_heartbeat()
    assert [event["Message"] for event in result.events] == ["greeted 2 times"]
    assert "greeted at seq 0" in result.log
    assert result.files["Contoso.Testing.Greeter-1.0.0/greeting.txt"] == b"hi hi\n"
    assert "Contoso.Testing.Greeter-1.0.0/status/0.status" in result.files
    assert result.env["ConfigSequenceNumber"] == "0"
    assert result.env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "NOT_RUN"


def test_settings_are_written_encrypted_as_an_agent_writes_them(
    exthandler_harness: Harness,
) -> None:
    result = exthandler_harness.run(
        Greeter,
        settings=GreeterSettings(greeting="attrs", times=1),
        protected_settings=GreeterSecrets(token="open-sesame"),
    )
    result.assert_success()
    raw = (result.handler_dir / "config" / "0.settings").read_text()
    assert "open-sesame" not in raw
    handler_settings = json.loads(raw)["runtimeSettings"][0]["handlerSettings"]
    assert handler_settings["publicSettings"] == {"greeting": "attrs", "times": 1}
    thumbprint = handler_settings["protectedSettingsCertThumbprint"]
    assert (exthandler_harness.root / f"{thumbprint}.crt").exists()
    assert oct((exthandler_harness.root / f"{thumbprint}.prv").stat().st_mode & 0o777) == "0o600"
    assert oct((result.handler_dir / "config").stat().st_mode & 0o777) == "0o700"


def test_errors_and_their_messages(exthandler_harness: Harness) -> None:
    result = exthandler_harness.run(
        Greeter, settings=SETTINGS, protected_settings={"token": "wrong"}
    )
    result.assert_error(53, "token is wrong")
    with pytest.raises(
        AssertionError,
        match=r"expected success, got exit code 53 and status 'error' code 53: the token is wrong",
    ):
        result.assert_success()
    with pytest.raises(AssertionError, match="expected error 52, got status 'error' code 53"):
        result.assert_error(52)
    with pytest.raises(AssertionError, match="expected 'other' in the status message"):
        result.assert_error(53, "other")
    bad = exthandler_harness.run(
        Greeter, settings={"greeting": 3}, protected_settings=SECRETS, sequence=1
    )
    bad.assert_error(53, "greeting")
    crashed = exthandler_harness.run(Broken)
    crashed.assert_error(-1, "boom")
    assert crashed.exit_code == 1


def test_sequence_numbers_and_operations_share_the_handler_dir(exthandler_harness: Harness) -> None:
    install = exthandler_harness.run(
        Greeter, "install", settings=SETTINGS, protected_settings=SECRETS
    )
    assert install.exit_code == 0
    assert install.status_bytes is None
    first = exthandler_harness.run(Greeter, settings=SETTINGS, protected_settings=SECRETS)
    first.assert_success()
    again = exthandler_harness.run(Greeter, settings=SETTINGS, protected_settings=SECRETS)
    again.assert_success("greeted at seq 0")
    assert again.events == ()  # already applied: nothing ran
    second = exthandler_harness.run(
        Greeter, settings={"greeting": "yo"}, protected_settings=SECRETS, sequence=1
    )
    second.assert_success("greeted at seq 1")
    disabled = exthandler_harness.run(Greeter, Operation.DISABLE, sequence=1)
    disabled.assert_success()
    update = exthandler_harness.run(
        GreeterNext,
        "update",
        settings=SETTINGS,
        protected_settings=SECRETS,
        sequence=1,
        updating_from="1.0.0",
        disable_exit_code=0,
    )
    assert update.exit_code == 0
    assert update.env["VERSION"] == "1.0.1"
    assert update.env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.0"
    assert "update from 1.0.0 to 1.0.1" in update.log


def test_no_settings_and_a_missing_status(exthandler_harness: Harness) -> None:
    result = exthandler_harness.run(Plain, "install")
    assert result.exit_code == 0
    assert (result.handler_dir / "config" / "0.settings").read_bytes() == b""
    assert result.status_bytes is None
    assert result.status is None
    assert result.status_problems() == [f"no status file was written ({result.status_path})"]
    with pytest.raises(AssertionError, match="no status file was written"):
        result.assert_valid_status()
    with pytest.raises(AssertionError, match="status: no file at"):
        result.assert_success()
    with pytest.raises(AssertionError, match="no heartbeat was written"):
        result.assert_valid_heartbeat()
    multi = exthandler_harness.run(Plain, "enable", extension="one", sequence=3)
    multi.assert_success()
    assert multi.status_path.name == "one.3.status"
    assert multi.env["ConfigExtensionName"] == "one"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_timeout_cancels_the_operation(exthandler_harness: Harness, backend: str) -> None:
    from exthandler.testing import Fault, faulty_class

    exthandler_harness.backend = backend
    hanging = faulty_class(Plain, Fault.hang("enable"))
    result = exthandler_harness.run(hanging, timeout=0.05)
    assert result.timed_out
    assert result.exit_code is None
    assert "exit code: timed out" in result.describe()


def test_invalid_status_files_are_reported_with_their_problems(tmp_path: Path) -> None:
    from exthandler.testing import Fault, faulty_class

    harness = Harness(root=tmp_path / "h", certificate_dir=tmp_path / "c")
    result = harness.run(faulty_class(Plain, Fault.bad_status("enable")))
    assert result.exit_code == 0
    with pytest.raises(AssertionError) as caught:
        result.assert_success()
    message = str(caught.value)
    assert "invalid status file" in message
    assert "$: a JSON dict, not an array" in message
    assert 'status file: b\'{"status"' in message
    heartbeat_fault = faulty_class(Plain, Fault.bad_status("enable", b"[{}]"))
    other = harness.run(heartbeat_fault, sequence=1)
    assert other.status_problems() == [
        "$[0].timestampUTC: None is not like 2026-11-25T12:00:00Z",
        "$[0].status: missing or not an object",
    ]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_call_refuses_to_run_inside_an_event_loop(
    exthandler_harness: Harness, backend: str
) -> None:
    import anyio

    async def main() -> None:
        exthandler_harness.run(Plain)

    with pytest.raises(TestingUsageError, match=r"use `await exthandler_harness.arun\(...\)`"):
        anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_call_runs_on_the_harness_backend(
    exthandler_harness: Harness, backend: str
) -> None:
    exthandler_harness.backend = backend
    exthandler_harness.run(Probe).assert_success(f"ran on {backend}")


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TestingUsageError, match="backend must be one of 'asyncio', 'trio'"):
        Harness(root=tmp_path, certificate_dir=tmp_path, backend="curio")


@pytest.mark.anyio
async def test_the_async_variant(exthandler_harness: Harness) -> None:
    result: HarnessResult = await exthandler_harness.arun(
        Greeter, settings=SETTINGS, protected_settings=SECRETS
    )
    result.assert_success()
