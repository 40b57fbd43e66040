"""The runtime beyond single flows: secrets, multi-config, the lock, `run`, the Python API."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from exthandler_sdk import hookimpl
from exthandler_sdk.protocol import TelemetryEvent

from exthandler import (
    ExtensionView,
    InstanceView,
    RuntimeConfig,
    StateDirLockedError,
    load_goal_state,
    open_runtime,
)
from exthandler._cli.progress import Progress
from exthandler._plan.planner import Step
from tests.runtime.support import Agent, Packages, extension, goal, start_run, view_of

SECRET = "s3cret-value-91c2"


def test_protected_settings_decrypt_with_openssl_and_never_leak(
    agent: Agent, packages: Packages
) -> None:
    packages.build(actions={"enable": 'echo "settings: $(cat "$dir/config/0.settings")"'})
    code, _ = agent.apply(
        goal(extension("ext", settings={"public": 1}, protectedSettings={"token": SECRET}))
    )
    assert code == 0
    settings = json.loads((agent.state / "Test.Ext-1.0.0" / "config" / "0.settings").read_text())
    handler = settings["runtimeSettings"][0]["handlerSettings"]
    thumbprint = handler["protectedSettingsCertThumbprint"]
    assert len(thumbprint) == 40
    assert thumbprint == thumbprint.upper()
    for suffix in (".crt", ".prv"):
        assert (agent.state / f"{thumbprint}{suffix}").stat().st_mode & 0o777 == 0o600
    import base64

    decrypted = subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-recip",
            str(agent.state / f"{thumbprint}.crt"),
            "-inkey",
            str(agent.state / f"{thumbprint}.prv"),
        ],
        input=base64.b64decode(handler["protectedSettings"]),
        capture_output=True,
        check=True,
    )
    assert json.loads(decrypted.stdout) == {"token": SECRET}
    for path in agent.root.rglob("*"):
        if path.is_file() and path.name != "goal.json":
            assert SECRET.encode() not in path.read_bytes(), path


def test_given_ciphertext_is_passed_through(agent: Agent, packages: Packages) -> None:
    packages.build()
    agent.apply(
        goal(
            extension(
                "ext", protectedSettings="TUlJQg==", protectedSettingsCertThumbprint="ab" * 20
            )
        )
    )
    settings = json.loads((agent.state / "Test.Ext-1.0.0" / "config" / "0.settings").read_text())
    handler = settings["runtimeSettings"][0]["handlerSettings"]
    assert handler["protectedSettings"] == "TUlJQg=="
    assert handler["protectedSettingsCertThumbprint"] == "AB" * 20
    assert handler["publicSettings"] is None


MULTI_XML = """<?xml version="1.0" encoding="utf-8"?>
<Extensions goalStateIncarnation="{incarnation}">
  <Plugins>
    <Plugin name="Test.Multi" version="1.0.0" state="enabled" autoUpgrade="false"/>
  </Plugins>
  <PluginSettings>
    <Plugin name="Test.Multi" version="1.0.0">
{settings}
    </Plugin>
  </PluginSettings>
</Extensions>
"""


def multi_settings(*entries: tuple[str, int, str]) -> str:
    body = '{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"n":1}}}]}'
    return "\n".join(
        f'      <ExtensionRuntimeSettings seqNo="{seq}" name="{name}" state="{state}">'
        f"{body}</ExtensionRuntimeSettings>"
        for name, seq, state in entries
    )


def test_multi_config_extensions(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Multi", "1.0.0", manifest={"supportsMultipleExtensions": True})
    xml = MULTI_XML.format(
        incarnation=1, settings=multi_settings(("first", 3, "enabled"), ("second", 5, "enabled"))
    )
    code, view = agent.apply(xml)
    assert code == 0
    ops = agent.take_ops()
    assert next(op.short for op in ops) == "install Test.Multi-1.0.0"
    enables = {op.env["ConfigExtensionName"]: op.env["ConfigSequenceNumber"] for op in ops[1:]}
    assert enables == {"first": "3", "second": "5"}
    config = agent.state / "Test.Multi-1.0.0" / "config"
    assert (config / "first.3.settings").exists()
    assert (config / "second.5.settings").exists()
    assert (config / "first.HandlerState").read_text() == "Enabled"
    assert view_of(view, "second")["sequenceNumber"] == 5
    assert view_of(view, "first")["statuses"][0]["message"] == "enabled Test.Multi-1.0.0 seq 3"

    # One extension disabled, the other unchanged: only its disable runs.
    xml = MULTI_XML.format(
        incarnation=2, settings=multi_settings(("first", 3, "enabled"), ("second", 5, "disabled"))
    )
    code, view = agent.apply(xml)
    assert code == 0
    ops = agent.take_ops()
    assert [(op.op, op.env["ConfigExtensionName"]) for op in ops] == [("disable", "second")]
    assert (config / "second.HandlerState").read_text() == "Installed"

    # Dropped from the goal: disabled (if enabled) and forgotten; the handler stays.
    xml = MULTI_XML.format(incarnation=3, settings=multi_settings(("first", 3, "enabled")))
    code, view = agent.apply(xml)
    assert code == 0
    assert agent.take_ops() == []
    assert [e["name"] for e in view["extensions"]] == ["first"]


def test_invalid_wire_settings_are_reported_not_dropped(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    xml = """<Extensions goalStateIncarnation="1"><Plugins>
      <Plugin name="Test.Ext" version="1.0.0" state="enabled"/></Plugins>
      <PluginSettings><Plugin name="Test.Ext" version="1.0.0">
      <RuntimeSettings seqNo="0">{not json</RuntimeSettings></Plugin></PluginSettings>
      </Extensions>"""
    code, view = agent.apply(xml)
    assert code == 1
    status = view_of(view, "Test.Ext")["statuses"][0]
    assert status["code"] == "ProvisioningState/failed/53"
    assert "invalid settings" in status["message"]
    assert agent.take_ops() == []


def test_a_second_runtime_exits_3(agent: Agent, packages: Packages) -> None:
    packages.build()

    async def hold() -> int:
        async with open_runtime(RuntimeConfig(state_dir=agent.state, load_entry_points=False)):
            with pytest.raises(StateDirLockedError, match="another exthandler runtime"):
                async with open_runtime(RuntimeConfig(state_dir=agent.state)):
                    pass  # pragma: no cover - never entered
            return await anyio.to_thread.run_sync(lambda: agent.apply(goal(extension("ext")))[0])

    assert anyio.run(hold) == 3
    assert agent.take_ops() == []
    assert agent.apply(goal(extension("ext")))[0] == 0  # released with the runtime


class Observer:
    """A plugin that records what the runtime announces."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.changes: list[str] = []
        self.views: list[InstanceView] = []
        self.events: list[TelemetryEvent] = []

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        self.steps.append(step.describe())

    @hookimpl
    def exthandler_extension_changed(self, view: ExtensionView) -> None:
        self.changes.append(f"{view.name}:{view.statuses[0].code}")

    @hookimpl
    def exthandler_instance_view_changed(self, view: InstanceView) -> None:
        self.views.append(view)

    @hookimpl
    def exthandler_telemetry_events(self, handler: str, events: Sequence[TelemetryEvent]) -> None:
        self.events.extend(events)


EVENT = (
    'printf \'{"Version":"1.0","Timestamp":"2026-11-25T12:00:00Z","TaskName":"t",'
    '"EventLevel":"Informational","Message":"hello event","EventPid":"1","EventTid":"1",'
    '"OperationId":"op"}\' > "$(dirname "$AZURE_GUEST_AGENT_EXTENSION_PATH")/log/Test.Ext/events/'
    '123.json"; write_status success 0 ok'
)


def test_python_api_with_observers(agent: Agent, packages: Packages) -> None:
    packages.build(actions={"enable": EVENT})
    agent.goal_path.write_text(json.dumps(goal(extension("ext"), id="api")))
    observer = Observer()
    config = RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        plugins=[observer],
        load_entry_points=False,
        boot_id_path=agent.root / "boot_id",
    )

    async def main() -> tuple[InstanceView, InstanceView]:
        async with open_runtime(config) as runtime:
            view = await runtime.apply(load_goal_state(agent.goal_path))
            return view, runtime.instance_view()

    view, live = anyio.run(main)
    assert view == live
    assert view.goal_state_id == "api"
    assert view.extension("ext") is not None
    assert observer.steps == [
        "fetch Test.Ext-1.0.0",
        "install Test.Ext-1.0.0",
        "enable ext Test.Ext-1.0.0",
    ]
    assert observer.changes[-1] == "ext:ProvisioningState/succeeded"
    assert observer.views[-1] == view
    assert [e.message for e in observer.events] == ["hello event"]
    assert not list((agent.state / "log" / "Test.Ext" / "events").iterdir())

    async def reopen() -> InstanceView:
        async with open_runtime(config) as runtime:
            return runtime.instance_view()  # before any apply: the last view written

    assert anyio.run(reopen).to_json() == view.to_json()


def test_heartbeat_becomes_a_substatus(agent: Agent, packages: Packages) -> None:
    beat = (
        'printf \'[{"version":"1.0","heartbeat":{"status":"Ready","code":0,'
        '"formattedMessage":{"lang":"en-US","message":"all good"}}}]\' > "$dir/heartbeat.log";'
        " write_status success 0 ok"
    )
    packages.build(actions={"enable": beat}, manifest={"reportHeartbeat": True})
    _, view = agent.apply(goal(extension("ext")))
    heartbeat = view_of(view, "ext")["substatuses"][-1]
    assert heartbeat["code"] == "ComponentStatus/Heartbeat/Ready"
    assert heartbeat["message"] == "all good"

    stale = time.time() - 3600
    os.utime(agent.state / "Test.Ext-1.0.0" / "heartbeat.log", (stale, stale))

    async def refresh() -> InstanceView:
        config = RuntimeConfig(
            state_dir=agent.state,
            repositories=[agent.repo],
            load_entry_points=False,
            boot_id_path=agent.root / "boot_id",
        )
        async with open_runtime(config) as runtime:
            await runtime.apply(load_goal_state(agent.goal_path))
            return await runtime.refresh()

    refreshed = anyio.run(refresh)
    ext = refreshed.extension("ext")
    assert ext is not None
    assert ext.substatuses[-1].code == "ComponentStatus/Heartbeat/Unresponsive"
    assert ext.substatuses[-1].level == "Error"
    assert agent.take_ops()[-1].op == "enable"  # the first apply only


def test_run_follows_its_source_and_stops_on_sigterm(agent: Agent, packages: Packages) -> None:
    packages.build()
    source = agent.root / "source"
    source.mkdir()
    (source / "goal.json").write_text(json.dumps(goal(extension("ext", settings={"n": 1}))))
    process = start_run(agent, source)
    try:
        wait_for(lambda: [op.op for op in agent.ops()] == ["install", "enable"])
        (source / "goal.json").write_text(json.dumps(goal(extension("ext", settings={"n": 2}))))
        wait_for(lambda: [op.op for op in agent.ops()] == ["install", "enable", "enable"])
        (source / "goal.json").write_text("{broken")
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err.decode()
    assert b"SIGTERM, stopping" in err
    assert b"not valid JSON" in err
    assert [op.env["ConfigSequenceNumber"] for op in agent.ops()] == ["0", "0", "1"]


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_per_handler_timeout(agent: Agent, packages: Packages) -> None:
    packages.build(actions={"enable": "sleep 30"})
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    config = RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        load_entry_points=False,
        handler_timeouts={"test.ext": 0.5},
        kill_grace=0.2,
    )

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            return await runtime.apply(load_goal_state(agent.goal_path))

    view = anyio.run(main)  # a timeout not enforced would wait for `sleep 30`
    ext = view.extension("ext")
    assert ext is not None
    assert ext.statuses[0].code == "ProvisioningState/failed/1011"


def test_status_of_a_state_dir_where_nothing_was_applied_is_empty(agent: Agent) -> None:
    (agent.root / "fresh").mkdir()
    code, out = agent.cli("status", "--state-dir", str(agent.root / "fresh"), "--json")
    assert code == 0
    assert json.loads(out) == {"goalStateId": None, "extensions": []}


def test_progress_line() -> None:
    from exthandler import HandlerName, Version
    from exthandler._plan.planner import StepKind

    out = io.StringIO()
    progress = Progress(out=out)
    steps = [
        Step(
            kind=StepKind.ENABLE,
            handler=HandlerName.parse(f"P.T{i}"),
            version=Version.parse("1.0"),
            extension=f"e{i}",
        )
        for i in range(5)
    ]
    for step in steps:
        progress.exthandler_step_started(step)
    assert "enable e0 P.T0-1.0" in progress.line()
    assert "+2 more" in progress.line()
    progress.exthandler_step_finished(steps[0], False, "Enable failed: exit code 3\nmore")
    progress.exthandler_step_finished(steps[1], True, "")
    assert "2 steps done, 1 failed" in progress.line()
    assert "failed: enable e0 P.T0-1.0: Enable failed: exit code 3\n" in out.getvalue()
    progress.clear()
    assert out.getvalue().endswith("\r")
