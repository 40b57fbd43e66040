"""End-to-end flows through the CLI with real packages that log every command they run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.runtime.support import (
    Agent,
    Packages,
    extension,
    goal,
    status_of,
    view_of,
    wait_until,
)


def test_fresh_install_then_unchanged_runs_nothing(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    code, view = agent.apply(goal(extension("ext", settings={"a": 1}), id="g1"))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Ext-1.0.0",
        "enable Test.Ext-1.0.0",
    ]
    assert view["goalStateId"] == "g1"
    ext = view_of(view, "ext")
    assert (ext["typeHandlerVersion"], ext["handlerState"], ext["sequenceNumber"]) == (
        "1.0.0",
        "Enabled",
        0,
    )
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert status_of(view, "ext")["message"] == "enabled Test.Ext-1.0.0 seq 0"

    code, view = agent.apply(goal(extension("ext", settings={"a": 1}), id="g1"))
    assert code == 0
    assert agent.take_ops() == []  # an unchanged goal state runs no command
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"


def test_a_large_package_is_fetched_and_extracted_like_a_small_one(
    agent: Agent, packages: Packages
) -> None:
    """Past INLINE_LIMIT the copy, digest check and extraction run in a worker thread."""
    from exthandler._fs import INLINE_LIMIT

    blob = "".join(f"{i:08x}" for i in range(INLINE_LIMIT // 4))  # stored, not deflated
    package = packages.build("Test.Ext", "1.0.0", files={"data/blob": blob})
    assert package.stat().st_size > INLINE_LIMIT
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view
    assert (agent.state / "Test.Ext-1.0.0" / "data" / "blob").read_text() == blob
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"


def test_protocol_files_and_environment(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext", settings={"commandToExecute": None, "n": 1})))
    handler_dir = agent.state / "Test.Ext-1.0.0"
    settings = json.loads((handler_dir / "config" / "0.settings").read_text())
    assert settings == {
        "runtimeSettings": [
            {
                "handlerSettings": {
                    "protectedSettingsCertThumbprint": None,
                    "protectedSettings": None,
                    "publicSettings": {"commandToExecute": None, "n": 1},
                }
            }
        ]
    }
    environment = json.loads((handler_dir / "HandlerEnvironment.json").read_text())
    assert environment[0]["name"] == "Test.Ext"
    folders = environment[0]["handlerEnvironment"]
    assert folders["configFolder"] == str(handler_dir / "config")
    assert folders["statusFolder"] == str(handler_dir / "status")
    assert folders["heartbeatFile"] == str(handler_dir / "heartbeat.log")
    assert folders["logFolder"] == str(agent.state / "log" / "Test.Ext")
    assert (handler_dir / "config" / "HandlerState").read_text() == "Enabled"
    assert (handler_dir / "config").stat().st_mode & 0o777 == 0o700
    assert (handler_dir / "status").stat().st_mode & 0o777 == 0o700
    enable = agent.ops()[-1]
    assert enable.env == {
        "AZURE_GUEST_AGENT_EXTENSION_PATH": str(handler_dir),
        "AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES": (
            '[{"Key":"ExtensionTelemetryPipeline","Value":"1.0"}]'
        ),
        "AZURE_GUEST_AGENT_EXTENSION_VERSION": "1.0.0",
        "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "NOT_RUN",
        "ConfigSequenceNumber": "0",
    }
    log = (agent.state / "log" / "Test.Ext" / "CommandExecution.log").read_text()
    assert "enable" in log
    assert "ConfigSequenceNumber" in log


def test_no_settings_gives_an_empty_settings_file(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(goal(extension("ext")))
    assert (agent.state / "Test.Ext-1.0.0" / "config" / "0.settings").read_bytes() == b""


def test_settings_change_bumps_the_sequence_and_runs_enable(
    agent: Agent, packages: Packages
) -> None:
    packages.build()
    agent.apply(goal(extension("ext", settings={"a": 1})))
    agent.take_ops()
    code, view = agent.apply(goal(extension("ext", settings={"a": 2})))
    assert code == 0
    ops = agent.take_ops()
    assert [op.short for op in ops] == ["enable Test.Ext-1.0.0"]
    assert ops[0].env["ConfigSequenceNumber"] == "1"
    assert view_of(view, "ext")["sequenceNumber"] == 1
    config = agent.state / "Test.Ext-1.0.0" / "config"
    assert json.loads((config / "1.settings").read_text())["runtimeSettings"][0]["handlerSettings"][
        "publicSettings"
    ] == {"a": 2}
    # Going back to earlier settings is still a change: the number only ever grows.
    agent.apply(goal(extension("ext", settings={"a": 1})))
    assert [op.env["ConfigSequenceNumber"] for op in agent.take_ops()] == ["2"]


def test_force_update_tag_reruns_enable(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(goal(extension("ext", forceUpdateTag="a")))
    agent.take_ops()
    agent.apply(goal(extension("ext", forceUpdateTag="b")))
    ops = agent.take_ops()
    assert [op.short for op in ops] == ["enable Test.Ext-1.0.0"]
    assert ops[0].env["ConfigSequenceNumber"] == "0"  # settings did not change


def test_reboot_reruns_enable_once(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Off", "1.0.0")
    document = goal(extension("ext"), extension("off", "Test.Off", state="disabled"))
    agent.apply(document)
    agent.take_ops()
    (agent.root / "boot_id").write_text("boot-2\n")
    agent.apply(document)
    assert [op.short for op in agent.take_ops()] == ["enable Test.Ext-1.0.0"]
    agent.apply(document)
    assert agent.take_ops() == []


def test_disable_then_enable_then_uninstall(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    code, view = agent.apply(goal(extension("ext", state="disabled")))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == ["disable Test.Ext-1.0.0"]
    assert view_of(view, "ext")["handlerState"] == "Installed"
    assert (agent.state / "Test.Ext-1.0.0" / "config" / "HandlerState").read_text() == "Installed"

    agent.apply(goal(extension("ext")))
    assert [op.short for op in agent.take_ops()] == ["enable Test.Ext-1.0.0"]

    code, view = agent.apply(goal(extension("ext", state="uninstall")))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "disable Test.Ext-1.0.0",
        "uninstall Test.Ext-1.0.0",
    ]
    assert view["extensions"] == []  # uninstalled extensions are not listed
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    assert (agent.state / "log" / "Test.Ext" / "CommandExecution.log").exists()  # logs stay


def test_absent_extension_is_uninstalled(agent: Agent, packages: Packages) -> None:
    packages.build("Test.A", "1.0.0")
    packages.build("Test.B", "1.0.0")
    agent.apply(goal(extension("a", "Test.A"), extension("b", "Test.B")))
    agent.take_ops()
    code, view = agent.apply(goal(extension("a", "Test.A")))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "disable Test.B-1.0.0",
        "uninstall Test.B-1.0.0",
    ]
    assert [e["name"] for e in view["extensions"]] == ["a"]
    assert not (agent.state / "Test.B-1.0.0").exists()


def test_upgrade_runs_the_exact_sequence(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0", files={"data/keep": "x"})
    agent.apply(goal(extension("ext", settings={"a": 1}, autoUpgradeMinorVersion=True)))
    old_dir = agent.state / "Test.Ext-1.0.0"
    (old_dir / "mrseq").write_text("0")
    agent.take_ops()

    packages.build("Test.Ext", "1.1.0")
    code, view = agent.apply(
        goal(extension("ext", settings={"a": 1}, autoUpgradeMinorVersion=True))
    )
    assert code == 0
    ops = agent.take_ops()
    assert [op.short for op in ops] == [
        "disable Test.Ext-1.0.0",
        "update Test.Ext-1.1.0",
        "uninstall Test.Ext-1.0.0",
        "install Test.Ext-1.1.0",
        "enable Test.Ext-1.1.0",
    ]
    disable, update, uninstall, install, enable = ops
    assert "VERSION" not in disable.env
    assert update.env["VERSION"] == "1.1.0"
    assert update.env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.0"
    assert update.env["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "0"
    assert "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS" not in update.env
    assert "VERSION" not in uninstall.env
    assert "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION" not in install.env
    assert install.env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "0"
    assert enable.env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "0"
    assert enable.env["AZURE_GUEST_AGENT_EXTENSION_VERSION"] == "1.1.0"
    new_dir = agent.state / "Test.Ext-1.1.0"
    assert (new_dir / "mrseq").read_text() == "0"  # carried over before update
    assert not old_dir.exists()
    assert not [p.name for p in agent.state.iterdir() if p.name.endswith(".removing")]
    ext = view_of(view, "ext")
    assert (ext["typeHandlerVersion"], ext["handlerState"]) == ("1.1.0", "Enabled")

    # A later settings change is an ordinary enable: the upgrade is over.
    agent.apply(goal(extension("ext", settings={"a": 2}, autoUpgradeMinorVersion=True)))
    later = agent.take_ops()
    assert [op.short for op in later] == ["enable Test.Ext-1.1.0"]
    assert later[0].env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "NOT_RUN"


def test_hotfix_is_forced_minor_is_opt_in(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext", version="1.0")))
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1")
    packages.build("Test.Ext", "1.1.0")
    packages.build("Test.Ext", "2.0.0")
    _, view = agent.apply(goal(extension("ext", version="1.0")))
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.0.1"  # hotfix: forced
    assert "update Test.Ext-1.0.1" in [op.short for op in agent.take_ops()]
    _, view = agent.apply(goal(extension("ext", version="1.0", autoUpgradeMinorVersion=True)))
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.1.0"  # minor: opted in
    agent.take_ops()
    _, view = agent.apply(goal(extension("ext", version="1.1.0", useExactVersion=True)))
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.1.0"  # never crosses to 2.0
    assert agent.take_ops() == []


def test_update_without_install(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1", manifest={"updateMode": "UpdateWithoutInstall"})
    code, _ = agent.apply(goal(extension("ext")))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "disable Test.Ext-1.0.0",
        "update Test.Ext-1.0.1",
        "uninstall Test.Ext-1.0.0",
        "enable Test.Ext-1.0.1",
    ]


def test_continue_on_update_failure_excuses_disable_and_uninstall(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0", actions={"disable": "exit 7", "uninstall": "exit 9"})
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1", manifest={"continueOnUpdateFailure": "true"})
    code, view = agent.apply(goal(extension("ext")))
    ops = agent.take_ops()
    assert [op.short for op in ops] == [
        "disable Test.Ext-1.0.0",
        "update Test.Ext-1.0.1",
        "uninstall Test.Ext-1.0.0",
        "install Test.Ext-1.0.1",
        "enable Test.Ext-1.0.1",
    ]
    assert ops[1].env["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "7"
    assert ops[3].env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "9"
    assert ops[4].env["AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"] == "9"
    assert code == 0
    assert view_of(view, "ext")["handlerState"] == "Enabled"


def test_failing_disable_stops_an_upgrade_without_the_flag(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0", actions={"disable": "exit 7"})
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert [op.short for op in agent.take_ops()] == ["disable Test.Ext-1.0.0"]
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/1010"
    assert "exit code 7" in status["message"]


def test_failing_update_marks_failed_upgrade(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1", actions={"update": "echo boom >&2; exit 4"})
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert [op.short for op in agent.take_ops()] == [
        "disable Test.Ext-1.0.0",
        "update Test.Ext-1.0.1",
    ]
    ext = view_of(view, "ext")
    assert (ext["typeHandlerVersion"], ext["handlerState"]) == ("1.0.1", "FailedUpgrade")
    state_file = agent.state / "Test.Ext-1.0.1" / "config" / "HandlerState"
    assert state_file.read_text() == "FailedUpgrade"
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/1008"
    assert "[stderr]\nboom" in status["message"]
    # Unchanged: not retried. The failure is still shown.
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert agent.take_ops() == []
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1008"


def test_downgrade_runs_the_higher_versions_update(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Ext", "1.0.1")
    agent.apply(goal(extension("ext", version="1.0.1", useExactVersion=True)))
    agent.take_ops()
    code, view = agent.apply(goal(extension("ext", version="1.0.0", useExactVersion=True)))
    assert code == 0
    ops = agent.take_ops()
    assert [op.short for op in ops] == [
        "disable Test.Ext-1.0.1",
        "update Test.Ext-1.0.1",
        "uninstall Test.Ext-1.0.1",
        "install Test.Ext-1.0.0",
        "enable Test.Ext-1.0.0",
    ]
    assert ops[1].env["VERSION"] == "1.0.0"
    assert ops[1].env["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.0.1"
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.0.0"


def test_dependencies_order_and_failure(agent: Agent, packages: Packages) -> None:
    packages.build(
        "Test.First", "1.0.0", actions={"enable": "sleep 0.3; write_status success 0 ok"}
    )
    packages.build("Test.Second", "1.0.0")
    packages.build("Test.Third", "1.0.0")
    document = goal(
        extension("third", "Test.Third", provisionAfterExtensions=["second"]),
        extension("second", "Test.Second", provisionAfterExtensions=["first"]),
        extension("first", "Test.First"),
    )
    code, _ = agent.apply(document)
    assert code == 0
    enables = [op.dir for op in agent.take_ops() if op.op == "enable"]
    assert enables == ["Test.First-1.0.0", "Test.Second-1.0.0", "Test.Third-1.0.0"]


def test_dependent_of_a_failed_extension_is_skipped(agent: Agent, packages: Packages) -> None:
    packages.build("Test.First", "1.0.0", actions={"enable": "exit 3"})
    packages.build("Test.Second", "1.0.0")
    packages.build("Test.Other", "1.0.0")
    code, view = agent.apply(
        goal(
            extension("second", "Test.Second", provisionAfterExtensions=["first"]),
            extension("first", "Test.First"),
            extension("other", "Test.Other"),
        )
    )
    assert code == 1
    dirs = {op.dir for op in agent.take_ops()}
    assert "Test.Second-1.0.0" not in dirs
    assert "Test.Other-1.0.0" in dirs  # the others are still processed
    status = status_of(view, "second")
    assert status["level"] == "Error"
    assert "'first'" in status["message"]
    assert "skipped" in status["message"]
    assert status_of(view, "first")["code"] == "ProvisioningState/failed/1009"
    assert status_of(view, "other")["code"] == "ProvisioningState/succeeded"


def test_dependent_waits_for_a_terminal_status(agent: Agent, packages: Packages) -> None:
    """An enable that returns while the extension still reports transitioning holds back
    its dependents until the status becomes terminal."""
    background = (
        "write_status transitioning 0 working; "
        "(sleep 0.6; write_status success 0 done) >/dev/null 2>&1 &"
    )
    packages.build("Test.Slow", "1.0.0", actions={"enable": background})
    packages.build("Test.After", "1.0.0")
    started = time.monotonic()
    code, view = agent.apply(
        goal(
            extension("after", "Test.After", provisionAfterExtensions=["slow"]),
            extension("slow", "Test.Slow"),
        )
    )
    assert code == 0
    assert time.monotonic() - started >= 0.6
    assert status_of(view, "slow")["message"] == "done"
    assert [op.dir for op in agent.take_ops() if op.op == "enable"][-1] == "Test.After-1.0.0"


def test_failing_enable_exit_1_others_done(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Bad", "1.0.0", actions={"enable": "echo out; echo err >&2; exit 5"})
    packages.build("Test.Good", "1.0.0")
    code, view = agent.apply(goal(extension("bad", "Test.Bad"), extension("good", "Test.Good")))
    assert code == 1
    bad = status_of(view, "bad")
    assert bad["code"] == "ProvisioningState/failed/1009"
    assert bad["level"] == "Error"
    assert bad["displayStatus"] == "Provisioning failed"
    assert "exit code 5" in bad["message"]
    assert "[stdout]\nout" in bad["message"]
    assert "[stderr]\nerr" in bad["message"]
    assert status_of(view, "good")["code"] == "ProvisioningState/succeeded"
    assert view_of(view, "bad")["handlerState"] == "Installed"
    agent.take_ops()
    # not retried while nothing changes, and the failure is still shown
    code, view = agent.apply(goal(extension("bad", "Test.Bad"), extension("good", "Test.Good")))
    assert code == 1
    assert agent.take_ops() == []
    assert status_of(view, "bad")["code"] == "ProvisioningState/failed/1009"
    assert "exit code 5" in status_of(view, "bad")["message"]
    assert "[stderr]\nerr" in status_of(view, "bad")["message"]


def test_extension_error_status_code_wins(agent: Agent, packages: Packages) -> None:
    packages.build(actions={"enable": 'write_status error 53 "bad config"; exit 53'})
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/53"
    assert status["message"].startswith("bad config")
    assert "exit code 53" in status["message"]


def test_success_without_a_status_file_is_noted(agent: Agent, packages: Packages) -> None:
    packages.build(actions={"enable": "true"})
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/succeeded"
    assert "wrote no status" in status["message"]


def test_invalid_status_file_is_1012(agent: Agent, packages: Packages) -> None:
    packages.build(actions={"enable": 'echo "{not json" > "$(status_file)"'})
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1012"


@pytest.mark.timeout(300)
def test_hung_enable_is_killed_with_its_grandchildren(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    hang = f'sleep 600 & echo $! > "{pids}"; sleep 600'
    packages.build("Test.Hang", "1.0.0", actions={"enable": hang})
    packages.build("Test.Fine", "1.0.0")
    # Were the timeout not enforced, the apply would wait for `sleep 600`: pytest-timeout
    # turns that into a failure; nothing here depends on how fast the machine is.
    code, view = agent.apply(
        goal(extension("hang", "Test.Hang"), extension("fine", "Test.Fine")),
        "--command-timeout",
        "1",
    )
    assert code == 1
    status = status_of(view, "hang")
    assert status["code"] == "ProvisioningState/failed/1011"
    assert status_of(view, "fine")["code"] == "ProvisioningState/succeeded"
    grandchild = int(pids.read_text())
    wait_until(lambda: not _alive(grandchild), what="the grandchild was killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_ten_independent_enables_run_concurrently(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    """Each enable checks in, then waits until 8 (the default concurrency) have: that can
    only happen when 8 of them run at once. One that gives up (after a safety-net count
    of tries) fails, and so does the apply."""
    arrived = tmp_path / "arrived"
    arrived.mkdir()
    barrier = (
        f'touch "{arrived}/$$"\n'
        "i=0\n"
        f'while [ "$(ls "{arrived}" | wc -l)" -lt 8 ]; do\n'
        '  i=$((i+1)); [ "$i" -lt 6000 ] || exit 1\n'
        "  sleep 0.01\n"
        "done\n"
        f'ls "{arrived}" | wc -l > "{arrived}.$$"\n'
        "write_status success 0 ok"
    )
    for i in range(10):
        packages.build(f"Test.Meet{i}", "1.0.0", actions={"enable": barrier})
    code, view = agent.apply(goal(*(extension(f"m{i}", f"Test.Meet{i}") for i in range(10))))
    assert code == 0, view
    assert len(list(arrived.iterdir())) == 10
    seen = [int(path.read_text()) for path in tmp_path.glob("arrived.*")]
    assert len(seen) == 10
    assert min(seen) >= 8  # every one of them saw at least 8 running at once


def test_missing_version_is_reported_not_fatal(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Other", "1.0.0")
    code, view = agent.apply(goal(extension("ext", version="3.0"), extension("ok", "Test.Other")))
    assert code == 1
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/1004"
    assert "available: 1.0.0" in status["message"]
    assert view_of(view, "ext")["handlerState"] == "NotInstalled"
    assert status_of(view, "ok")["code"] == "ProvisioningState/succeeded"


def test_an_unlistable_repository_does_not_stop_the_others(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build("Test.Ext", "1.0.0")
    broken = tmp_path / "second-repo"
    broken.write_text("a file where a directory should be")
    code, view = agent.apply(goal(extension("ext")), "--repo", str(broken))
    assert code == 0, view
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert "second-repo cannot be listed" in (agent.state / "exthandler.log").read_text()


def test_an_unlistable_repository_is_1001_for_what_is_not_installed(
    agent: Agent, packages: Packages
) -> None:
    shutil.rmtree(packages.repo)
    packages.repo.write_text("a file where a directory should be")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    status = status_of(view, "ext")  # the versions on offer are unknown, not missing
    assert status["code"] == "ProvisioningState/failed/1001"
    assert "cannot be listed" in status["message"]
    assert agent.take_ops() == []


def test_an_installed_handler_stays_while_its_repository_cannot_be_listed(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0")
    code, _ = agent.apply(goal(extension("ext")))
    assert code == 0
    agent.take_ops()
    shutil.rmtree(packages.repo)
    packages.repo.write_text("a file where a directory should be")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view
    assert view_of(view, "ext")["handlerState"] == "Enabled"
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert agent.take_ops() == []  # nothing to run: the goal is what is installed
    log = (agent.state / "exthandler.log").read_text()
    assert "cannot be listed" in log
    assert "staying at 1.0.0" in log


def test_a_package_holding_a_file_named_config_is_1005_and_the_others_go_on(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0", files={"config": "where the runtime wants a dir"})
    packages.build("Test.Other", "1.0.0")
    code, view = agent.apply(goal(extension("ext"), extension("ok", "Test.Other")))
    assert code == 1
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/1005"
    assert "cannot be laid out" in status["message"]
    assert status_of(view, "ok")["code"] == "ProvisioningState/succeeded"
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Other-1.0.0",
        "enable Test.Other-1.0.0",
    ]


def test_an_unexpected_error_stops_one_handler_and_not_the_pass(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Other", "1.0.0")
    code, _ = agent.apply(goal(extension("ext"), extension("ok", "Test.Other")))
    assert code == 0
    agent.take_ops()
    # Someone replaced a handler's config dir by a file: its new settings cannot be written.
    config = agent.state / "Test.Ext-1.0.0" / "config"
    shutil.rmtree(config)
    config.write_text("not a directory")
    changed = goal(
        extension("ext", settings={"n": 2}), extension("ok", "Test.Other", settings={"n": 2})
    )
    code, view = agent.apply(changed)
    assert code == 1
    status = status_of(view, "ext")
    assert status["code"] == "ProvisioningState/failed/-1"
    assert status["message"].startswith("stopped:")
    assert "config" in status["message"]
    assert status_of(view, "ok")["code"] == "ProvisioningState/succeeded"
    assert [op.short for op in agent.take_ops()] == ["enable Test.Other-1.0.0"]
    assert "Test.Ext: stopped:" in (agent.state / "exthandler.log").read_text()


def test_broken_package_is_1005_and_leaves_nothing(agent: Agent, packages: Packages) -> None:
    (packages.repo / "Test.Ext__1.0.0.zip").write_bytes(b"not a zip at all")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1005"
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    assert agent.take_ops() == []


def test_bad_goal_changes_nothing(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    before = sorted(str(p) for p in agent.state.rglob("*"))
    code, view = agent.apply('{"extensions": [{"name": "ext", "bogus": 1}]}')
    assert code == 2
    assert view == {}
    assert agent.take_ops() == []
    assert sorted(str(p) for p in agent.state.rglob("*")) == before


def test_status_command_reads_the_last_view(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(goal(extension("ext"), id="g7"))
    code, out = agent.cli("status", "--state-dir", str(agent.state), "--json")
    assert code == 0
    assert json.loads(out)["goalStateId"] == "g7"
    code, out = agent.cli("status", "--state-dir", str(agent.state))
    assert code == 0
    assert "ext" in out
    assert "Enabled" in out


def test_a_failure_left_behind_is_retried_when_its_goal_returns(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext", version="1.0.0", useExactVersion=True)))
    (packages.repo / "Test.Ext__1.0.1.zip").write_bytes(b"broken")
    wanted = goal(extension("ext", version="1.0.1", useExactVersion=True))
    assert agent.apply(wanted)[0] == 1
    # Back to the installed version: nothing to do, and the old failure is forgotten...
    assert agent.apply(goal(extension("ext", version="1.0.0", useExactVersion=True)))[0] == 0
    agent.take_ops()
    packages.build("Test.Ext", "1.0.1")
    # ...so the goal that failed is tried again when it returns.
    code, view = agent.apply(wanted)
    assert code == 0
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.0.1"
    assert "update Test.Ext-1.0.1" in [op.short for op in agent.take_ops()]


def test_a_handler_dir_that_vanished_is_installed_again(agent: Agent, packages: Packages) -> None:
    """A kill between deleting a dir and recording it, or an operator's rm -rf, heals."""
    import shutil

    packages.build()
    agent.apply(goal(extension("ext")))
    agent.take_ops()
    shutil.rmtree(agent.state / "Test.Ext-1.0.0")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Ext-1.0.0",
        "enable Test.Ext-1.0.0",
    ]
    assert view_of(view, "ext")["handlerState"] == "Enabled"


def test_a_removed_handler_whose_dir_vanished_is_forgotten(
    agent: Agent, packages: Packages
) -> None:
    """A kill between deleting a removed handler's dir and recording it leaves a record of a
    handler with no dir: the next apply forgets it, and keeps forgetting it."""
    import shutil

    from exthandler._state.store import Store

    packages.build()
    agent.apply(goal(extension("ext")))
    shutil.rmtree(agent.state / "Test.Ext-1.0.0")
    agent.take_ops()
    code, view = agent.apply(goal(id="empty"))
    assert code == 0
    assert view == {"goalStateId": "empty", "extensions": []}
    assert agent.take_ops() == []  # no dir: nothing to disable or uninstall
    assert Store(root=agent.state, log_root=agent.state / "log").load_records() == {}
    assert agent.apply(goal(id="empty"))[0] == 0
    assert Store(root=agent.state, log_root=agent.state / "log").load_records() == {}


def test_disabled_and_never_installed_runs_nothing(agent: Agent, packages: Packages) -> None:
    packages.build()
    code, view = agent.apply(goal(extension("ext", state="disabled")))
    assert code == 0
    assert agent.take_ops() == []
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    ext = view_of(view, "ext")
    assert ext["handlerState"] == "NotInstalled"
    assert ext["statuses"][0]["code"] == "ProvisioningState/succeeded"


def test_empty_goal_state_uninstalls_everything_and_lists_nothing(
    agent: Agent, packages: Packages
) -> None:
    packages.build()
    agent.apply(goal(extension("ext"), id="full"))
    code, view = agent.apply(goal(id="empty"))
    assert code == 0
    assert view == {"goalStateId": "empty", "extensions": []}
    assert [op.op for op in agent.take_ops()][-2:] == ["disable", "uninstall"]
    code, out = agent.cli("status", "--state-dir", str(agent.state), "--json")
    assert json.loads(out) == {"goalStateId": "empty", "extensions": []}


def test_an_upgrade_killed_after_removing_the_old_dir_completes(
    agent: Agent, packages: Packages
) -> None:
    """The old version's dir is gone but its removal was not recorded (a kill between the
    two): the next apply finishes the upgrade instead of tripping over the missing dir."""

    from exthandler._model import Version
    from exthandler._plan.planner import UpgradePhase, UpgradeRecord
    from exthandler._state.store import Store

    packages.build("Test.Ext", "1.0.0")
    agent.apply(goal(extension("ext")))
    packages.build("Test.Ext", "1.0.1")
    agent.apply(goal(extension("ext")))
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    # Rewind the record to "old uninstalled; removal of its dir not yet recorded".
    store = Store(root=agent.state, log_root=agent.state / "log")
    record = next(iter(store.load_records().values()))
    rewound = record.replace(
        version=Version.parse("1.0.0"),
        upgrade=UpgradeRecord(
            source=Version.parse("1.0.0"),
            target=Version.parse("1.0.1"),
            phase=UpgradePhase.OLD_UNINSTALLED,
        ),
        extensions=tuple(e.replace(enabled=False, converged=None) for e in record.extensions),
    )
    store.journal.compact({record.handler: rewound}, 99)
    store.release()
    agent.take_ops()
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Ext-1.0.1",
        "enable Test.Ext-1.0.1",
    ]


def test_temporary_files_of_an_interrupted_write_are_swept(
    agent: Agent, packages: Packages
) -> None:
    packages.build()
    agent.apply(goal(extension("ext")))
    config = agent.state / "Test.Ext-1.0.0" / "config"
    ours = config / ".HandlerState.0badf00d.exthandler-tmp"
    ours.write_text("Enab")  # a kill in the middle of writing HandlerState
    theirs = config / ".extension-own.tmp"  # an extension's own: never ours to remove
    theirs.write_text("x")
    (agent.state / ".exthandler" / ".records.json.12345678.exthandler-tmp").write_text("{")
    # A runtime killed -9 leaves its pid in the lock file; a clean one empties it.
    (agent.state / ".exthandler" / "lock").write_text("12345\n")
    agent.apply(goal(extension("ext")))
    assert not ours.exists()
    assert theirs.exists()
    assert not list((agent.state / ".exthandler").glob("*.exthandler-tmp"))
