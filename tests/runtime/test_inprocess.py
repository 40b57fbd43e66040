"""SDK handlers in process: the same files as a package, upgrades between registered
versions, plugins, timeouts, and versions that disappear."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from exthandler_sdk import Handler, Operation
from exthandler_sdk._package import build_package

from exthandler import GoalState, InstanceView, RuntimeConfig, open_runtime, parse_goal_state
from tests.runtime.sdk_handlers import Counter, CounterNext, CounterPlugin, Crasher, Sleeper
from tests.sdk.standin_agent import StandinAgent, read_status

SETTINGS = {"word": "tick", "times": 3}
SECRETS = {"token": "open-sesame"}


def counter_goal(
    version: str = "1.0", settings: dict[str, Any] = SETTINGS, **extra: Any
) -> GoalState:
    document = {
        "extensions": [
            {
                "name": "counter",
                "publisher": "Contoso.Testing",
                "type": "Counter",
                "typeHandlerVersion": version,
                "settings": settings,
                "protectedSettings": SECRETS,
                **extra,
            }
        ]
    }
    return parse_goal_state(json.dumps(document))


def apply(
    state: Path,
    goal: GoalState,
    *,
    handlers: Sequence[type[Handler[Any, Any]]] = (),
    repositories: Sequence[Path] = (),
    **options: Any,
) -> InstanceView:
    config = RuntimeConfig(
        state_dir=state,
        repositories=repositories,
        handlers=handlers,
        load_entry_points=False,
        **options,
    )

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            return await runtime.apply(goal)

    return anyio.run(main)


def sleeper_goal() -> GoalState:
    """One extension of the Contoso.Testing.Sleeper handler."""
    extension = {
        "name": "sleeper",
        "publisher": "Contoso.Testing",
        "type": "Sleeper",
        "typeHandlerVersion": "1.0",
    }
    return parse_goal_state(json.dumps({"extensions": [extension]}))


def comparable(status: dict[str, Any] | None) -> dict[str, Any]:
    """A status document without its timestamps."""
    assert status is not None
    status = json.loads(json.dumps(status))
    status.pop("timestampUTC", None)
    status["status"].pop("configurationAppliedTime", None)
    return status


def operations(log_root: Path) -> list[str]:
    path = log_root / "Contoso.Testing.Counter" / "operations.log"
    return path.read_text().splitlines() if path.exists() else []


def test_the_same_status_in_process_packaged_and_under_a_standin_agent(tmp_path: Path) -> None:
    # 1. In process, under the runtime.
    inproc = tmp_path / "inprocess"
    view = apply(inproc, counter_goal(), handlers=[Counter])
    assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
    in_process = json.loads((inproc / "Contoso.Testing.Counter-1.0.0/status/0.status").read_text())

    # 2. Packaged, under the runtime's process executor.
    repo = tmp_path / "repo"
    package = build_package(Counter, "tests.runtime.sdk_handlers:Counter", repo)
    packaged_state = tmp_path / "packaged"
    view = apply(packaged_state, counter_goal(), repositories=[repo])
    assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded", view
    packaged = json.loads(
        (packaged_state / "Contoso.Testing.Counter-1.0.0/status/0.status").read_text()
    )

    # 3. Packaged, under a stand-in agent that follows the protocol to the letter.
    agent = StandinAgent(lib=tmp_path / "standin", log_root=tmp_path / "standin-log")
    handler_dir = agent.install_and_enable(package, 0, SETTINGS, SECRETS)
    standin = read_status(handler_dir, 0)

    assert comparable(in_process[0]) == comparable(packaged[0]) == comparable(standin)
    assert in_process[0]["status"]["formattedMessage"]["message"] == "counted 3 at seq 0"
    assert in_process[0]["status"]["substatus"][0]["formattedMessage"]["message"] == (
        "tick tick tick"
    )
    # The same files besides the status: settings, environment, manifest.
    for name in ("HandlerManifest.json", "config/0.settings", "HandlerEnvironment.json"):
        assert (inproc / "Contoso.Testing.Counter-1.0.0" / name).exists()
        assert (packaged_state / "Contoso.Testing.Counter-1.0.0" / name).exists()
    # The manifests differ only in the key that names the in-process class.
    manifests = [
        json.loads((state / "Contoso.Testing.Counter-1.0.0/HandlerManifest.json").read_text())
        for state in (inproc, packaged_state)
    ]
    assert manifests[0][0].pop("exthandlerInProcess") == "tests.runtime.sdk_handlers:Counter"
    assert manifests[0] == manifests[1]


def test_upgrade_between_registered_versions(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply(state, counter_goal("1.0.0", useExactVersion=True), handlers=[Counter, CounterNext])
    view = apply(
        state,
        counter_goal("1.0", settings={"word": "tock"}),
        handlers=[Counter, CounterNext],
    )
    assert view.extensions[0].type_handler_version == "1.0.1"
    assert view.extensions[0].handler_state == "Enabled"
    assert operations(state / "log") == [
        "install 1.0.0 uninstall=None",
        "enable 1.0.0 seq=0",
        "disable 1.0.0",
        "update 1.0.1 from=1.0.0 to=1.0.1 disable=0",
        "uninstall 1.0.0",
        "install 1.0.1 uninstall=0",
        "enable 1.0.1 seq=1",
    ]
    assert not (state / "Contoso.Testing.Counter-1.0.0").exists()


def test_a_plugin_registers_handlers_through_the_hook(tmp_path: Path) -> None:
    view = apply(tmp_path / "state", counter_goal(), plugins=[CounterPlugin()])
    assert view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"


def test_a_failing_in_process_enable_reports_its_code(tmp_path: Path) -> None:
    document = counter_goal().extensions[0]
    goal = counter_goal()

    from exthandler._model import PlainProtectedSettings

    bad = document.replace(protected_settings=PlainProtectedSettings(value={"token": "x"}))
    goal = goal.replace(extensions=(bad,))
    view = apply(tmp_path / "state", goal, handlers=[Counter])
    status = view.extensions[0].statuses[0]
    assert status.code == "ProvisioningState/failed/53"
    assert "the token is wrong" in status.message
    # The install succeeded: its HandlerState is written although the enable failed.
    handler_state = tmp_path / "state/Contoso.Testing.Counter-1.0.0/config/HandlerState"
    assert handler_state.read_text() == "Installed"


def test_settings_that_do_not_structure_are_error_53(tmp_path: Path) -> None:
    view = apply(tmp_path / "state", counter_goal(settings={"times": "many"}), handlers=[Counter])
    status = view.extensions[0].statuses[0]
    assert status.code == "ProvisioningState/failed/53"
    assert "settings.word" in status.message
    assert "settings.times" in status.message


def test_an_in_process_enable_that_hangs_is_cancelled_with_1011(tmp_path: Path) -> None:
    goal = sleeper_goal()
    view = apply(tmp_path / "state", goal, handlers=[Sleeper], command_timeout=0.5)
    assert view.extensions[0].statuses[0].code == "ProvisioningState/failed/1011"


def test_a_version_that_disappeared_is_skipped_with_a_warning(tmp_path: Path) -> None:
    state = tmp_path / "state"
    apply(state, counter_goal(), handlers=[Counter])
    empty = parse_goal_state(b'{"extensions": []}')
    view = apply(state, empty)  # Counter is no longer registered anywhere
    assert view.extensions == ()
    assert not (state / "Contoso.Testing.Counter-1.0.0").exists()
    assert "no longer registered" in (state / "exthandler.log").read_text()
    assert operations(state / "log") == ["install 1.0.0 uninstall=None", "enable 1.0.0 seq=0"]


@pytest.mark.parametrize("registered", [[Counter], []])
def test_register_handler_on_a_runtime(tmp_path: Path, registered: list[type[Counter]]) -> None:
    config = RuntimeConfig(state_dir=tmp_path / "state", load_entry_points=False)

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            for handler_class in registered:
                runtime.register_handler(handler_class)
            return await runtime.apply(counter_goal())

    view = anyio.run(main)
    code = view.extensions[0].statuses[0].code
    if registered:
        assert code == "ProvisioningState/succeeded"
    else:
        assert code == "ProvisioningState/failed/1004"  # no such version anywhere


def test_a_handler_declares_its_own_command_timeouts(tmp_path: Path) -> None:
    from exthandler_plugins.customscript import CustomScript

    from exthandler._engine import DEFAULT_TIMEOUTS
    from tests.runtime.sdk_handlers import QuickSleeper

    goal = sleeper_goal()
    view = apply(tmp_path / "own", goal, handlers=[QuickSleeper])  # no runtime setting
    assert view.extensions[0].statuses[0].code == "ProvisioningState/failed/1011"
    # CustomScript may run for the 90 minutes the platform documents, not the usual 5.
    assert CustomScript.command_timeouts["enable"] >= 90 * 60
    assert DEFAULT_TIMEOUTS[Operation.ENABLE] == 300


def test_the_runtime_setting_overrides_the_handlers_own(tmp_path: Path) -> None:
    from tests.runtime.sdk_handlers import QuickSleeper

    slow = type("SlowSleeper", (QuickSleeper,), {"command_timeouts": {"enable": 3600.0}})
    goal = sleeper_goal()
    view = apply(tmp_path / "override", goal, handlers=[slow], command_timeout=0.5)
    assert view.extensions[0].statuses[0].code == "ProvisioningState/failed/1011"


def test_operations_a_class_does_not_implement_are_not_called(tmp_path: Path) -> None:
    """Counter without install/update/uninstall of its own: those steps succeed at once,
    say so in CommandExecution.log, and the lifecycle around them is unchanged."""

    class Plain(Counter):
        install = Handler.install
        update = Handler.update
        uninstall = Handler.uninstall

    class PlainNext(Plain):
        version = "1.0.1"

    state = tmp_path / "state"
    apply(state, counter_goal("1.0.0", useExactVersion=True), handlers=[Plain, PlainNext])
    view = apply(state, counter_goal("1.0", settings={"word": "tock"}), handlers=[Plain, PlainNext])
    assert (view.extensions[0].type_handler_version, view.extensions[0].handler_state) == (
        "1.0.1",
        "Enabled",
    )
    # Only the operations the class implements ran.
    assert operations(state / "log") == [
        "enable 1.0.0 seq=0",
        "disable 1.0.0",
        "enable 1.0.1 seq=1",
    ]
    log = (state / "log" / "Contoso.Testing.Counter" / "CommandExecution.log").read_text()
    for cls, operation in [
        (Plain, "install"),
        (PlainNext, "update"),
        (Plain, "uninstall"),
        (PlainNext, "install"),
    ]:
        assert f"result: not run: {cls.__name__} does not implement {operation}" in log
    assert (state / "Contoso.Testing.Counter-1.0.1/config/HandlerState").read_text() == "Enabled"


CRASHER_GOAL = {
    "extensions": [
        {
            "name": "crasher",
            "publisher": "Contoso.Testing",
            "type": "Crasher",
            "typeHandlerVersion": "1.0",
        }
    ]
}

KILLED_RUN = """
import json, sys, anyio
from pathlib import Path
from exthandler import RuntimeConfig, open_runtime, parse_goal_state
from tests.runtime.sdk_handlers import Crasher

async def main():
    config = RuntimeConfig(
        state_dir=Path(sys.argv[1]), handlers=[Crasher], load_entry_points=False
    )
    async with open_runtime(config) as runtime:
        await runtime.apply(parse_goal_state(sys.argv[2]))

anyio.run(main)
"""


def test_a_runtime_killed_in_an_in_process_install_resumes(tmp_path: Path) -> None:
    """The dir laid out for an in-process handler is not recorded on its own (its record
    rides with the install's): after a kill in install, the next apply lays it out again,
    runs the interrupted install again, and enables."""
    state = tmp_path / "state"
    log_folder = state / "log" / "Contoso.Testing.Crasher"
    log_folder.mkdir(parents=True)
    (log_folder / "crash").touch()
    goal = json.dumps(CRASHER_GOAL)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(state), goal],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert (state / "Contoso.Testing.Crasher-1.0.0" / "HandlerManifest.json").exists()

    view = apply(state, parse_goal_state(goal), handlers=[Crasher])
    assert (view.extensions[0].handler_state, view.extensions[0].statuses[0].code) == (
        "Enabled",
        "ProvisioningState/succeeded",
    )
    lines = (log_folder / "operations.log").read_text().splitlines()
    assert lines == ["install 1.0.0", "install 1.0.0", "enable 1.0.0"]


class StateReader(Counter):
    """Records what config/HandlerState says while its enable runs."""

    seen: ClassVar[list[str | None]] = []

    async def enable(self, ctx: Any) -> None:
        path = ctx.handler_dir / "config" / "HandlerState"
        type(self).seen.append(path.read_text() if path.exists() else None)
        await super().enable(ctx)


def test_an_enable_right_after_an_in_process_install_replaces_no_installed_state(
    tmp_path: Path,
) -> None:
    StateReader.seen = []
    state = tmp_path / "state"
    apply(state, counter_goal(), handlers=[StateReader])
    assert StateReader.seen == [None]  # Installed was never written: Enabled came at once
    handler_state = state / "Contoso.Testing.Counter-1.0.0/config/HandlerState"
    assert handler_state.read_text() == "Enabled"
    # A later enable (new settings) sees the state the last pass left.
    apply(state, counter_goal(settings={"word": "tock"}), handlers=[StateReader])
    assert StateReader.seen == [None, "Enabled"]
