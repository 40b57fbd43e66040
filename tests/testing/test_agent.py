"""`exthandler_agent`: a real runtime, its commands, faults, reboots and kills."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from exthandler import open_runtime
from exthandler.testing import Agent, Fault, SigningCA, TestingUsageError, check_lifecycle
from tests.testing.handlers import Governed, Greeter, GreeterNext, Plain

SECRETS = {"token": "open-sesame"}


def greeter(
    version: str = "1.0", state: str = "enabled", *, exact: bool = False, **settings: Any
) -> dict[str, Any]:
    return {
        "extensions": [
            {
                "name": "greeter",
                "publisher": "Contoso.Testing",
                "type": "Greeter",
                "typeHandlerVersion": version,
                "state": state,
                "useExactVersion": exact,
                "settings": {"greeting": "hi", **settings},
                "protectedSettings": SECRETS,
            }
        ]
    }


def test_commands_in_order_with_their_env(exthandler_agent: Agent) -> None:
    exthandler_agent.add_handler(Greeter)
    view = exthandler_agent.apply(greeter())
    assert view.extensions[0].statuses[0].message == "greeted at seq 0"
    commands = exthandler_agent.take_commands()
    assert [c.short for c in commands] == [
        "install Contoso.Testing.Greeter-1.0.0",
        "enable Contoso.Testing.Greeter-1.0.0",
    ]
    assert all(c.ok for c in commands)
    assert commands[1].extension == "greeter"
    assert commands[1].env["ConfigSequenceNumber"] == "0"
    assert commands[1].env["AZURE_GUEST_AGENT_EXTENSION_VERSION"] == "1.0.0"
    assert [(c.exit_code, c.duration is not None) for c in commands] == [("0", True)] * 2
    # unchanged: nothing runs; new settings: the next sequence number
    exthandler_agent.apply(greeter())
    assert exthandler_agent.take_commands() == []
    exthandler_agent.apply(greeter(times=2))
    assert [c.env["ConfigSequenceNumber"] for c in exthandler_agent.take_commands()] == ["1"]
    # a sequence number given outright, and a reboot
    exthandler_agent.apply(greeter(times=2), sequence_numbers={"greeter": 7})
    assert [c.env["ConfigSequenceNumber"] for c in exthandler_agent.take_commands()] == ["7"]
    exthandler_agent.reboot()
    exthandler_agent.apply(greeter(times=2), sequence_numbers={"greeter": 7})
    assert [c.short for c in exthandler_agent.take_commands()] == [
        "enable Contoso.Testing.Greeter-1.0.0"
    ]
    assert exthandler_agent.status("greeter").code == "ProvisioningState/succeeded"
    assert exthandler_agent.extension("greeter").sequence_number == 7
    assert len(exthandler_agent.commands) == 5
    with pytest.raises(KeyError, match="no extension nope"):
        exthandler_agent.apply(greeter(), sequence_numbers={"nope": 1})
    with pytest.raises(
        AssertionError, match=r"no extension 'other' in the instance view \(there are: greeter\)"
    ):
        exthandler_agent.extension("other")


FORGER = """#!/bin/sh
# Output that looks like entries of CommandExecution.log, which records it verbatim.
echo '===== 2026-01-01T00:00:00.000000Z Enable'
echo 'env: ConfigSequenceNumber=999'
echo 'env: FORGED=yes'
here=$(cd "$(dirname "$0")/.." && pwd)
printf '[{"version":1.0,"timestampUTC":"2026-11-25T12:00:00Z","status":{"name":"f",\
"operation":"enable","status":"success","code":0,\
"formattedMessage":{"lang":"en-US","message":"ok"}}}]' > "$here/status/$ConfigSequenceNumber.status"
"""


def test_what_a_command_prints_cannot_change_what_the_agent_records(
    exthandler_agent: Agent, tmp_path: Path
) -> None:
    package = tmp_path / "Contoso.Testing.Forger__1.0.0.zip"
    with zipfile.ZipFile(package, "w") as archive:
        manifest = {"installCommand": "bin/ok.sh", "enableCommand": "bin/enable.sh"}
        manifest |= {"disableCommand": "bin/ok.sh", "uninstallCommand": "bin/ok.sh"}
        manifest |= {"updateCommand": "bin/ok.sh"}
        archive.writestr(
            "HandlerManifest.json",
            json.dumps([{"name": "Forger", "version": 1.0, "handlerManifest": manifest}]),
        )
        for name, text in (("bin/enable.sh", FORGER), ("bin/ok.sh", "#!/bin/sh\nexit 0\n")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            archive.writestr(info, text)
    exthandler_agent.add_package(package, kill_points=False)
    exthandler_agent.apply(
        {
            "extensions": [
                {
                    "name": "f",
                    "publisher": "Contoso.Testing",
                    "type": "Forger",
                    "typeHandlerVersion": "1.0",
                }
            ]
        }
    )
    assert exthandler_agent.status("f").code == "ProvisioningState/succeeded"
    enable = exthandler_agent.take_commands()[-1]
    assert enable.short == "enable Contoso.Testing.Forger-1.0.0"
    assert enable.env["ConfigSequenceNumber"] == "0"
    assert "FORGED" not in enable.env


def test_goal_states_as_text_and_an_empty_view(tmp_path: Path) -> None:
    agent = Agent(root=tmp_path / "a")
    with pytest.raises(AssertionError, match="nothing was applied"):
        agent.instance_view()
    agent.add_handler(Plain)
    text = (
        '{"extensions": [{"name": "p", "publisher": "Contoso.Testing", "type": "Plain",'
        ' "typeHandlerVersion": "2.0"}]}'
    )
    agent.apply(text)
    assert agent.status("p").code == "ProvisioningState/succeeded"
    agent.apply(agent.goal_state(text.encode()))
    agent.apply({"extensions": []})
    assert [c.operation for c in agent.take_commands()] == [
        "install",
        "enable",
        "disable",
        "uninstall",
    ]
    agent.close()


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (Fault.hang("enable"), "ProvisioningState/failed/1011", "timed out"),
        (Fault.crash("enable"), "ProvisioningState/failed/-1", "injected crash"),
        (Fault.exit("enable", 7), "ProvisioningState/failed/7", "injected failure"),
        (Fault.bad_status("enable"), "ProvisioningState/failed/1012", "not a JSON array"),
    ],
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_faults_of_handler_classes(
    exthandler_agent: Agent, fault: Fault, code: str, words: str, backend: str
) -> None:
    exthandler_agent.backend = backend  # the in-process handler runs on the runtime's
    exthandler_agent.hang_timeout = 0.3  # in process: nothing to start, a short limit will do
    used = exthandler_agent.add_handler(Greeter, fault=fault)
    assert used is not Greeter
    assert issubclass(used, Greeter)
    exthandler_agent.apply(greeter())
    status = exthandler_agent.status("greeter")
    assert status.code == code, status
    assert words in status.message


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (Fault.hang("enable"), "ProvisioningState/failed/1011", "timed out"),
        (Fault.crash("enable"), "ProvisioningState/failed/1009", "137"),
        (Fault.exit("enable", 3), "ProvisioningState/failed/1009", "injected failure of enable"),
        (Fault.bad_status("enable"), "ProvisioningState/failed/1012", "not a JSON array"),
    ],
)
def test_faults_of_packages(exthandler_agent: Agent, fault: Fault, code: str, words: str) -> None:
    exthandler_agent.add_built_package(Greeter, fault=fault)
    if fault.kind == "hang":
        _install_then_stop_at_enable(exthandler_agent)
    exthandler_agent.apply(greeter())
    status = exthandler_agent.status("greeter")
    assert status.code == code, status
    assert words in status.message
    commands = exthandler_agent.take_commands()
    enable = [c for c in commands if c.operation == "enable"]
    assert [c.ok for c in enable] == [fault.kind == "bad-status"], commands
    if fault.kind == "hang":  # installed before: only the enable ran, under the hang's limit
        assert [c.operation for c in commands] == ["enable"]


def _install_then_stop_at_enable(agent: Agent) -> None:
    """Apply until the (hanging) enable starts, then cancel that apply.

    A hang's short limit applies to every command of its handler, and a packaged install
    takes a while on a busy machine; so the install runs here under a limit that is only
    a safety net, and the next apply runs nothing but the interrupted enable again.
    """
    agent.command_timeout = 3600.0

    async def until_enable_starts() -> None:
        with anyio.fail_after(600):  # a safety net: the enable starts within seconds
            async with anyio.create_task_group() as group:
                group.start_soon(agent.aapply, greeter())
                # The kit records a command as it starts, and notifies nobody: look.
                while not any(c.operation == "enable" for c in agent.commands):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()

    anyio.run(until_enable_starts)
    agent.command_timeout = None
    assert [c.short for c in agent.take_commands()] == [
        "install Contoso.Testing.Greeter-1.0.0",
        "enable Contoso.Testing.Greeter-1.0.0",
    ]


def test_upgrade_and_kill_mid_operation_then_recovery(exthandler_agent: Agent) -> None:
    exthandler_agent.add_built_package(Greeter)
    exthandler_agent.add_built_package(GreeterNext)
    exthandler_agent.apply(greeter("1.0.0", exact=True))
    exthandler_agent.take_commands()
    goal = greeter("1.0.1", exact=True)
    killed = exthandler_agent.apply_killed(
        goal, "uninstall", handler="Contoso.Testing.Greeter-1.0.0"
    )
    assert killed.returncode == -9
    assert killed.handler_dir == "Contoso.Testing.Greeter-1.0.0"
    before = exthandler_agent.take_commands()
    assert [c.short for c in before] == [
        "disable Contoso.Testing.Greeter-1.0.0",
        "update Contoso.Testing.Greeter-1.0.1",
        "uninstall Contoso.Testing.Greeter-1.0.0",
    ]
    # What the killed runtime's hooks reported: two commands ended, one never did.
    assert [c.ok for c in before] == [True, True, False]
    assert [c.exit_code for c in before] == ["0", "0", None]
    assert before[1].env["VERSION"] == "1.0.1"
    assert before[1].env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.0"
    assert before[2].message == "interrupted: the runtime was killed"
    view = exthandler_agent.apply(goal)
    after = [c.short for c in exthandler_agent.take_commands()]
    assert after == [
        "uninstall Contoso.Testing.Greeter-1.0.0",
        "install Contoso.Testing.Greeter-1.0.1",
        "enable Contoso.Testing.Greeter-1.0.1",
    ]
    assert view.extensions[0].type_handler_version == "1.0.1"
    assert exthandler_agent.status("greeter").code == "ProvisioningState/succeeded"
    assert not exthandler_agent.handler_dir("Contoso.Testing.Greeter", "1.0.0").exists()


def test_a_killed_runtime_is_recorded_as_a_live_one_would_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin a killed CLI loads writes lines that read back into the records the
    agent keeps for its own runtimes; a command with no end failed."""
    from exthandler._testing._killed import STEPS_VARIABLE, plugin, replay
    from exthandler._testing._record import CommandLog

    steps = tmp_path / "steps.jsonl"
    monkeypatch.setenv(STEPS_VARIABLE, str(steps))
    with Agent(root=tmp_path / "a") as agent:
        agent.add_handler(Greeter, fault=Fault.exit("enable", 5))
        live = CommandLog()
        config = agent.config().replace(plugins=[plugin, live])

        async def main() -> None:
            async with open_runtime(config) as runtime:
                await runtime.apply(agent.goal_state(greeter()))

        anyio.run(main)
    assert [c.short for c in live.records] == [
        "install Contoso.Testing.Greeter-1.0.0",
        "enable Contoso.Testing.Greeter-1.0.0",
    ]
    assert live.records[1].exit_code == "5"
    assert replay(steps, abandoned="killed") == live.records
    with steps.open("a") as file:  # a command that started and never ended
        file.write(
            '{"record": {"operation": "disable", "handler": "Contoso.Testing.Greeter",'
            ' "version": "1.0.0", "extension": "greeter", "ok": null, "message": "running"},'
            ' "started": 1}\n'
        )
    last = replay(steps, abandoned="killed")[-1]
    assert (last.short, last.ok, last.message) == (
        "disable Contoso.Testing.Greeter-1.0.0",
        False,
        "killed",
    )


def test_kill_point_that_never_comes(exthandler_agent: Agent) -> None:
    exthandler_agent.add_handler(Greeter)  # in process: the CLI does not know it
    with pytest.raises(AssertionError, match="the runtime never started enable of Nope"):
        exthandler_agent.apply_killed(greeter(), "enable", handler="Nope", timeout=20)


def test_teardown_kills_what_is_left(tmp_path: Path) -> None:
    root = tmp_path / "a"
    with Agent(root=root, kill_points=False) as agent:
        agent.add_built_package(Plain)
        with pytest.raises(AssertionError, match="is it a package added with kill points"):
            agent.apply_killed(
                {
                    "extensions": [
                        {
                            "name": "p",
                            "publisher": "Contoso.Testing",
                            "type": "Plain",
                            "typeHandlerVersion": "2.0",
                        }
                    ]
                },
                "enable",
                timeout=0.01,
            )
    # Nothing the agent started runs any longer.
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(root) not in listing.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sync_apply_inside_a_loop_is_refused(exthandler_agent: Agent, backend: str) -> None:
    import anyio

    async def main() -> None:
        exthandler_agent.apply(greeter())

    with pytest.raises(TestingUsageError, match=r"await exthandler_agent.aapply\(...\)"):
        anyio.run(main, backend=backend)


@pytest.mark.anyio
async def test_async_apply(exthandler_agent: Agent) -> None:
    exthandler_agent.add_handler(Greeter)
    view = await exthandler_agent.aapply(greeter())
    assert view.extensions[0].handler_state == "Enabled"


def test_lifecycle_of_handler_classes(exthandler_agent: Agent) -> None:
    report = check_lifecycle(
        exthandler_agent,
        GreeterNext,
        previous=Greeter,
        settings={"greeting": "hi"},
        protected_settings=SECRETS,
    )
    assert [phase.name for phase in report.phases] == [
        "install and enable",
        "enable with the next sequence number",
        "upgrade 1.0.0 -> 1.0.1",
        "disable",
        "uninstall",
    ]
    assert report.phases[2].commands[1].env["VERSION"] == "1.0.1"


def test_lifecycle_without_upgrade_and_its_failures(exthandler_agent: Agent) -> None:
    check_lifecycle(exthandler_agent, Plain)
    with pytest.raises(TypeError, match="needs its version"):
        check_lifecycle(exthandler_agent, "Contoso.Testing.Plain")
    with pytest.raises(ValueError, match="not a version of"):
        check_lifecycle(exthandler_agent, Greeter, previous=Plain)


def test_lifecycle_reports_the_phase_that_failed(exthandler_agent: Agent) -> None:
    exthandler_agent.add_handler(Greeter, fault=Fault.exit("enable", 9))
    with pytest.raises(
        AssertionError,
        match=r"lifecycle phase 'install and enable': enable Contoso.Testing.Greeter-1.0.0 failed",
    ):
        check_lifecycle(
            exthandler_agent,
            "Contoso.Testing.Greeter",
            version="1.0.0",
            settings={"greeting": "x"},
            protected_settings=SECRETS,
        )


def test_signed_packages_with_the_session_ca(
    exthandler_agent: Agent, exthandler_signing_ca: SigningCA
) -> None:
    exthandler_agent.signing_ca = exthandler_signing_ca
    exthandler_agent.set_policy(
        {"policyVersion": "0.1.0", "extensionPolicies": {"signatureRequired": True}}
    )
    package = exthandler_agent.add_built_package(Greeter, sign=True)
    assert package.with_name(package.name + ".sig").is_file()
    exthandler_agent.apply(greeter())
    assert exthandler_agent.status("greeter").code == "ProvisioningState/succeeded"
    # Unsigned, the next version is refused before anything of it runs.
    exthandler_agent.take_commands()
    exthandler_agent.add_built_package(GreeterNext)
    exthandler_agent.apply(greeter("1.0.1", exact=True))
    status = exthandler_agent.status("greeter")
    assert status.code == "ProvisioningState/failed/1004"
    assert "the policy requires a signed package" in status.message
    assert exthandler_agent.take_commands() == []


def test_signing_needs_a_ca(exthandler_agent: Agent) -> None:
    with pytest.raises(TestingUsageError, match="signing_ca"):
        exthandler_agent.add_built_package(Greeter, sign=True)


@pytest.mark.parametrize("packaged", [False, True], ids=["in-process", "packaged"])
def test_handlers_read_their_runtime_policy(exthandler_agent: Agent, packaged: bool) -> None:
    if packaged:
        exthandler_agent.add_built_package(Governed)
    else:
        exthandler_agent.add_handler(Governed)
    rules = {"maxCommands": 3, "paths": ["/opt"]}
    exthandler_agent.set_policy(
        {
            "policyVersion": "0.1.0",
            "extensionPolicies": {
                "extensions": {"contoso.testing.governed": {"runtimePolicy": rules}}
            },
        }
    )
    goal: dict[str, Any] = {
        "extensions": [
            {
                "name": "governed",
                "publisher": "Contoso.Testing",
                "type": "Governed",
                "typeHandlerVersion": "1.0.0",
            }
        ]
    }
    exthandler_agent.apply(goal)
    assert json.loads(exthandler_agent.status("governed").message) == rules
    exthandler_agent.set_policy(None)
    goal["extensions"][0]["settings"] = {}
    exthandler_agent.apply(goal)
    assert exthandler_agent.status("governed").message == "null"
