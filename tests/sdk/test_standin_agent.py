"""An SDK handler, packaged, runs under a stand-in agent that knows only the protocol."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from exthandler_sdk._package import build_package

from .packaged_handlers import EXPECTED_TOKEN, Greeter, GreeterNext
from .standin_agent import AgentError, StandinAgent, read_manifest, read_status

HANDLER = "Contoso.Testing.Greeter"
SECRETS = {"token": EXPECTED_TOKEN}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("repo")
    old = build_package(Greeter, "tests.sdk.packaged_handlers:Greeter", out)
    new = build_package(GreeterNext, "tests.sdk.packaged_handlers:GreeterNext", out)
    return old, new


@pytest.fixture
def agent(tmp_path: Path) -> StandinAgent:
    return StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")


def _status(handler_dir: Path, seq: int) -> dict[str, Any]:
    element = read_status(handler_dir, seq)
    assert element is not None, f"no status/{seq}.status in {handler_dir.name}"
    status: dict[str, Any] = element["status"]
    return status


def _substatus(status: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["formattedMessage"]["message"] for entry in status["substatus"]}


def _operations(agent: StandinAgent) -> list[str]:
    return (agent.log_root / HANDLER / "operations.log").read_text().splitlines()


def _commands(agent: StandinAgent) -> list[tuple[str, str, int]]:
    return [(result.version, result.operation, result.exit_code) for result in agent.commands]


def test_full_lifecycle_with_upgrade(agent: StandinAgent, packages: tuple[Path, Path]) -> None:
    old_zip, new_zip = packages

    # Nothing installed, requested enabled: install, then enable (seq 0).
    old_dir = agent.install_and_enable(old_zip, 0, {"greeting": "hello"}, SECRETS)
    assert old_dir == agent.lib / f"{HANDLER}-1.0.0"
    status = _status(old_dir, 0)
    assert status["operation"] == "Enable"
    assert (status["status"], status["code"]) == ("success", 0)
    assert status["formattedMessage"] == {"lang": "en-US", "message": "hello from 1.0.0 at seq 0"}
    assert _substatus(status)["Greeting"] == "hello"
    assert EXPECTED_TOKEN not in (old_dir / "config" / "0.settings").read_text()
    for suffix in ("crt", "prv"):
        mode = (agent.lib / f"{agent.thumbprint}.{suffix}").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600

    # Same version, new settings (seq 1): enable only.
    result = agent.enable(old_dir, 1, {"greeting": "hi", "repeat": 3}, SECRETS)
    assert result.exit_code == 0, result.stderr
    status = _status(old_dir, 1)
    assert status["formattedMessage"]["message"] == "hi from 1.0.0 at seq 1"
    assert _substatus(status)["Greeting"] == "hi hi hi"
    assert _status(old_dir, 0)["formattedMessage"]["message"] == "hello from 1.0.0 at seq 0"

    # A hotfix appears with the same settings (still seq 1): the protocol's upgrade
    # sequence (docs/protocol.md#lifecycle).
    new_dir = agent.upgrade(old_dir, new_zip, 1, {"greeting": "hi", "repeat": 3}, SECRETS)
    assert new_dir == agent.lib / f"{HANDLER}-1.0.1"
    assert not old_dir.exists()
    assert _commands(agent) == [
        ("1.0.0", "install", 0),
        ("1.0.0", "enable", 0),
        ("1.0.0", "enable", 0),
        ("1.0.0", "disable", 0),
        ("1.0.1", "update", 0),
        ("1.0.0", "uninstall", 0),
        ("1.0.1", "install", 0),
        ("1.0.1", "enable", 0),
    ]
    # The old version's statuses were carried over (with its mrseq: the new version's
    # enable sees sequence 1 as applied already and does not run the handler again).
    assert _status(new_dir, 0)["formattedMessage"]["message"] == "hello from 1.0.0 at seq 0"
    assert (new_dir / "mrseq").exists()
    assert _status(new_dir, 1)["status"] == "success"
    assert _operations(agent) == [
        "1.0.0 install seq=0 uninstall=None",
        "1.0.0 enable seq=0 greeting=hello",
        "1.0.0 enable seq=1 greeting=hi",
        "1.0.0 disable seq=1",
        "1.0.1 update from=1.0.0 to=1.0.1 disable=0",
        "1.0.0 uninstall seq=1",
        "1.0.1 install seq=1 uninstall=0",
    ]

    # New settings for the new version (seq 2): enable only.
    result = agent.enable(new_dir, 2, {"greeting": "hey"}, SECRETS)
    assert result.exit_code == 0, result.stderr
    assert _status(new_dir, 2)["formattedMessage"]["message"] == "hey from 1.0.1 at seq 2"

    # Requested disabled, then uninstall: disable runs once, then uninstall; the dir goes.
    disabled = agent.disable(new_dir, 2)
    assert disabled is not None
    assert disabled.exit_code == 0
    status = _status(new_dir, 2)
    assert (status["operation"], status["status"]) == ("Disable", "success")
    agent.uninstall(new_dir, 2)
    assert not new_dir.exists()
    assert _operations(agent)[-2:] == ["1.0.1 disable seq=2", "1.0.1 uninstall seq=2"]
    assert _commands(agent)[-2:] == [("1.0.1", "disable", 0), ("1.0.1", "uninstall", 0)]
    # The log dir outlives the handler dir.
    assert (agent.log_root / HANDLER / "CommandExecution.log").exists()


def test_upgrade_together_with_new_settings(
    agent: StandinAgent, packages: tuple[Path, Path]
) -> None:
    old_zip, new_zip = packages
    old_dir = agent.install_and_enable(old_zip, 0, {"greeting": "hello"}, SECRETS)
    # The old version's disable and uninstall run with sequence 1, whose settings exist
    # only in the new handler dir (as with the reference agent): they must still work.
    new_dir = agent.upgrade(old_dir, new_zip, 1, {"greeting": "hey"}, SECRETS)
    status = _status(new_dir, 1)
    assert (status["operation"], status["status"]) == ("Enable", "success")
    assert status["formattedMessage"]["message"] == "hey from 1.0.1 at seq 1"
    assert _operations(agent)[-5:] == [
        "1.0.0 disable seq=1",
        "1.0.1 update from=1.0.0 to=1.0.1 disable=0",
        "1.0.0 uninstall seq=1",
        "1.0.1 install seq=1 uninstall=0",
        "1.0.1 enable seq=1 greeting=hey",
    ]


def test_update_variables_are_set_for_update_only(
    agent: StandinAgent, packages: tuple[Path, Path]
) -> None:
    old_zip, new_zip = packages
    old_dir = agent.install_and_enable(old_zip, 0, {"greeting": "hello"}, SECRETS)
    agent.upgrade(old_dir, new_zip, 0, {"greeting": "hello"}, SECRETS)
    by_operation = {(result.version, result.operation): result.env for result in agent.commands}
    update = by_operation["1.0.1", "update"]
    assert update["VERSION"] == "1.0.1"
    assert update["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.0"
    assert update["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "0"
    for key in ("1.0.1", "install"), ("1.0.1", "enable"):
        env = by_operation[key]
        assert "VERSION" not in env
        assert env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "0"
    assert (
        by_operation["1.0.0", "install"]["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "NOT_RUN"
    )


def test_bad_settings_give_error_53_listing_every_field(
    agent: StandinAgent, packages: tuple[Path, Path]
) -> None:
    handler_dir = agent.extract(packages[0])
    agent.write_settings(handler_dir, 0, {"greeting": 5, "repeat": "x"}, {"tokn": "s3cret"})
    result = agent.run_command(handler_dir, "enable", 0)
    assert result.exit_code == 53
    status = _status(handler_dir, 0)
    assert (status["status"], status["code"]) == ("error", 53)
    message = status["formattedMessage"]["message"]
    lines = message.splitlines()
    for path in ("settings.greeting", "settings.repeat", "protectedSettings.token"):
        assert [line for line in lines if line.startswith(f"{path}: ")], message
    assert "s3cret" not in message


def test_a_wrong_token_is_a_handler_error(agent: StandinAgent, packages: tuple[Path, Path]) -> None:
    with pytest.raises(AgentError, match=r"enable of Contoso\.Testing\.Greeter 1\.0\.0 exited 53"):
        agent.install_and_enable(packages[0], 0, {"greeting": "hello"}, {"token": "nope"})
    status = _status(agent.lib / f"{HANDLER}-1.0.0", 0)
    assert (status["status"], status["code"]) == ("error", 53)
    assert status["formattedMessage"]["message"] == "the token is wrong"


def test_manifest_is_read_leniently(tmp_path: Path) -> None:
    document = [
        {
            "name": "X",
            "version": 1.0,
            "handlerManifest": {
                **{f"{op}Command": f"bin/{op}" for op in ("install", "enable", "disable")},
                "updateCommand": "bin/update",
                "uninstallCommand": "/bin/uninstall",
                "reportHeartbeat": "TRUE",
                "continueOnUpdateFailure": "yes",
                "updateMode": "updatewithoutinstall",
            },
        },
        {"ignored": True},
    ]
    (tmp_path / "HandlerManifest.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    manifest = read_manifest(tmp_path)
    assert manifest.report_heartbeat is True
    assert manifest.continue_on_update_failure is False
    assert manifest.supports_multiple_extensions is False
    assert manifest.update_with_install is False
    (tmp_path / "HandlerManifest.json").write_text("{")
    with pytest.raises(AgentError, match="1003"):
        read_manifest(tmp_path)
