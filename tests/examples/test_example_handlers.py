"""The example shell packages (examples/repo) under `exthandler_agent`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exthandler.testing import Agent, Fault, check_lifecycle

REPO = Path(__file__).resolve().parents[2] / "examples" / "repo"
HELLO = "Contoso.Examples.Hello"
NOTES = "Contoso.Examples.Notes"


def hello(version: str = "1.0.0", greeting: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "name": "hello",
        "publisher": "Contoso.Examples",
        "type": "Hello",
        "typeHandlerVersion": version,
        "useExactVersion": True,
        "settings": {"greeting": greeting},
        **extra,
    }


def notes(note: str = "remember the milk", **extra: Any) -> dict[str, Any]:
    return {
        "name": "notes",
        "publisher": "Contoso.Examples",
        "type": "Notes",
        "typeHandlerVersion": "2.0",
        "settings": {"note": note},
        "protectedSettings": {"secretNote": "in the fridge"},
        "provisionAfterExtensions": ["hello"],
        **extra,
    }


def goal(*extensions: dict[str, Any]) -> dict[str, Any]:
    return {"extensions": list(extensions)}


def test_install_settings_change_upgrade_and_uninstall(exthandler_agent: Agent) -> None:
    exthandler_agent.add_packages(REPO)

    exthandler_agent.apply(goal(hello(), notes()))
    assert [c.short for c in exthandler_agent.take_commands()] == [
        f"install {HELLO}-1.0.0",
        f"enable {HELLO}-1.0.0",
        f"install {NOTES}-2.0.0",
        f"enable {NOTES}-2.0.0",
    ]
    assert exthandler_agent.status("hello").message == f"Hello from {HELLO} 1.0.0: hi"
    notes_dir = exthandler_agent.handler_dir(NOTES, "2.0.0")
    assert (notes_dir / "notes.txt").read_text() == "remember the milk\n"

    # a settings change: enable again, with the next sequence number
    exthandler_agent.apply(goal(hello(), notes("buy bread")))
    commands = exthandler_agent.take_commands()
    assert [(c.short, c.env["ConfigSequenceNumber"]) for c in commands] == [
        (f"enable {NOTES}-2.0.0", "1")
    ]
    assert (notes_dir / "notes.txt").read_text() == "buy bread\n"

    # Hello 1.0.0 -> 1.0.1, in the documented order, with the update's variables
    exthandler_agent.apply(goal(hello("1.0.1"), notes("buy bread")))
    commands = exthandler_agent.take_commands()
    assert [c.short for c in commands] == [
        f"disable {HELLO}-1.0.0",
        f"update {HELLO}-1.0.1",
        f"uninstall {HELLO}-1.0.0",
        f"install {HELLO}-1.0.1",
        f"enable {HELLO}-1.0.1",
    ]
    update = commands[1].env
    assert (update["VERSION"], update["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"]) == (
        "1.0.1",
        "1.0.0",
    )
    assert update["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "0"
    assert commands[3].env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "0"
    assert exthandler_agent.status("hello").message == f"Hello from {HELLO} 1.0.1: hi"
    assert not exthandler_agent.handler_dir(HELLO, "1.0.0").exists()

    # both gone from the goal state: disable, then uninstall, dirs removed, logs kept
    exthandler_agent.apply(goal())
    assert sorted(c.short for c in exthandler_agent.take_commands()) == sorted(
        [
            f"disable {HELLO}-1.0.1",
            f"uninstall {HELLO}-1.0.1",
            f"disable {NOTES}-2.0.0",
            f"uninstall {NOTES}-2.0.0",
        ]
    )
    assert exthandler_agent.instance_view().extensions == ()
    assert not notes_dir.exists()
    assert (exthandler_agent.log_root / HELLO / "CommandExecution.log").exists()


def test_lifecycle_of_the_examples(exthandler_agent: Agent) -> None:
    exthandler_agent.add_packages(REPO)
    report = check_lifecycle(
        exthandler_agent,
        HELLO,
        version="1.0.1",
        previous="1.0.0",
        settings={"greeting": "hello"},
    )
    assert len(report.phases) == 5
    check_lifecycle(
        exthandler_agent,
        NOTES,
        version="2.0.0",
        settings={"note": "n"},
        protected_settings={"secretNote": "s"},
        extension="notes",
    )


def test_a_failing_dependency_skips_its_dependent(exthandler_agent: Agent) -> None:
    exthandler_agent.add_package(REPO / f"{HELLO}__1.0.0.zip", fault=Fault.exit("enable", 3))
    exthandler_agent.add_package(REPO / f"{NOTES}__2.0.0.zip")
    exthandler_agent.apply(goal(hello(), notes()))
    assert exthandler_agent.status("hello").code == "ProvisioningState/failed/1009"
    assert "injected failure of enable" in exthandler_agent.status("hello").message
    skipped = exthandler_agent.status("notes")
    assert skipped.code == "ProvisioningState/failed/-1"
    assert "'hello'" in skipped.message


def test_a_malformed_status_and_a_reboot(exthandler_agent: Agent) -> None:
    exthandler_agent.add_package(REPO / f"{HELLO}__1.0.0.zip", fault=Fault.bad_status("enable"))
    exthandler_agent.apply(goal(hello()))
    assert exthandler_agent.status("hello").code == "ProvisioningState/failed/1012"
    exthandler_agent.add_package(REPO / f"{HELLO}__1.0.0.zip")  # fixed package, same version
    exthandler_agent.reboot()
    exthandler_agent.apply(goal(hello()))
    # the runtime re-runs the enable it still has on disk after a reboot
    assert [c.short for c in exthandler_agent.take_commands()][-1] == f"enable {HELLO}-1.0.0"


def test_killed_during_enable_then_converges(exthandler_agent: Agent) -> None:
    exthandler_agent.add_packages(REPO)
    killed = exthandler_agent.apply_killed(goal(hello(), notes()), "enable", handler=NOTES)
    assert killed.handler_dir == f"{NOTES}-2.0.0"
    exthandler_agent.take_commands()
    exthandler_agent.apply(goal(hello(), notes()))
    assert [c.short for c in exthandler_agent.take_commands()] == [f"enable {NOTES}-2.0.0"]
    for name in ("hello", "notes"):
        assert exthandler_agent.status(name).code == "ProvisioningState/succeeded"
