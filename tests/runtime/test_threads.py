"""Threads compute, the event loop decides: every hook is called on the event loop's thread,
also when a long-running agent refreshes the view between goal states."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import anyio
from exthandler_sdk import hookimpl
from exthandler_sdk.protocol import TelemetryEvent

from exthandler import ExtensionView, InstanceView, RuntimeConfig, load_goal_state, open_runtime
from tests.runtime.support import Agent, Packages, extension, goal, wait_until

# The enable returns at once; a daemon it leaves behind reports later and drops an event.
_LATE_REPORT = (
    "(sleep 0.2; "
    'while [ ! -e "$dir/../../go" ]; do sleep 0.02; done; '
    'printf \'{"Version":"1.0","Timestamp":"2026-11-25T12:00:00Z","TaskName":"t",'
    '"EventLevel":"Informational","Message":"late","EventPid":"1","EventTid":"1",'
    '"OperationId":"op"}\' > "$(dirname "$AZURE_GUEST_AGENT_EXTENSION_PATH")/log/Test.Ext/'
    'events/1.json"; write_status success 0 "done later"; touch "$dir/../../reported") '
    "</dev/null >/dev/null 2>&1 &\n"
    'write_status transitioning 0 "working"'
)


class _Threads:
    """Records the thread of every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    @hookimpl
    def exthandler_extension_changed(self, view: ExtensionView) -> None:
        self.calls.append(("extension_changed", threading.get_ident()))

    @hookimpl
    def exthandler_instance_view_changed(self, view: InstanceView) -> None:
        self.calls.append(("instance_view_changed", threading.get_ident()))

    @hookimpl
    def exthandler_telemetry_events(self, handler: str, events: Sequence[TelemetryEvent]) -> None:
        self.calls.append(("telemetry_events", threading.get_ident()))


def test_hooks_run_on_the_event_loop_during_apply_and_refresh(
    agent: Agent, packages: Packages
) -> None:
    packages.build(actions={"enable": _LATE_REPORT})
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    threads = _Threads()
    config = RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        plugins=[threads],
        load_entry_points=False,
        boot_id_path=agent.root / "boot_id",
    )

    async def main() -> tuple[int, str]:
        loop_thread = threading.get_ident()
        async with open_runtime(config) as runtime:
            await runtime.apply(load_goal_state(agent.goal_path))
            threads.calls.clear()
            (agent.root / "go").write_text("")
            reported = agent.root / "reported"
            await anyio.to_thread.run_sync(lambda: wait_until(reported.exists, what="the report"))
            view = await runtime.refresh()
            ext = view.extension("ext")
            assert ext is not None
            return loop_thread, ext.statuses[0].message

    loop_thread, message = anyio.run(main)
    assert message == "done later"
    names = {name for name, _ in threads.calls}
    assert {"extension_changed", "telemetry_events"} <= names
    assert {ident for _, ident in threads.calls} == {loop_thread}
