"""The runtime on both anyio backends: an in-process handler runs on the host's backend,
a package runs as a real process, and a timeout stops either."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from exthandler_sdk import Context, Handler

from exthandler import (
    ExtensionView,
    GoalState,
    InstanceView,
    RuntimeConfig,
    open_runtime,
    parse_goal_state,
)
from tests.runtime.sdk_handlers import Sleeper
from tests.runtime.support import Agent, Packages, extension, goal

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Probe(Handler[None, None]):
    """Reports the backend it runs on, beats, and outlives the runner's first report."""

    name = "Contoso.Testing.Probe"
    version = "1.0.0"
    report_heartbeat = True

    async def enable(self, ctx: Context[None, None]) -> None:
        library = anyio.get_cancelled_exc_class().__module__.partition(".")[0]
        await ctx.heartbeat.ready(f"beating on {library}")
        # Work on a thread and a pause, as handlers do: both on the host's loop.
        await anyio.to_thread.run_sync(ctx.log.info, "from a worker thread")
        await anyio.sleep(0.01)
        await ctx.status.success(f"ran on {library}")


class AsyncioOnly(Handler[None, None]):
    """Calls asyncio itself: it can run only on a host whose loop is asyncio's."""

    name = "Contoso.Testing.AsyncioOnly"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        await asyncio.sleep(0.01)
        await ctx.status.success("slept")


async def apply(config: RuntimeConfig, document: dict[str, Any]) -> InstanceView:
    async with open_runtime(config) as runtime:
        return await runtime.apply(parse_goal(document))


def parse_goal(document: dict[str, Any]) -> GoalState:
    return parse_goal_state(json.dumps(document))


def only(view: InstanceView) -> ExtensionView:
    (found,) = view.extensions
    return found


async def test_an_in_process_handler_runs_on_the_hosts_backend(
    tmp_path: Path, anyio_backend: str
) -> None:
    config = RuntimeConfig(state_dir=tmp_path / "state", handlers=[Probe], load_entry_points=False)
    view = only(await apply(config, goal(extension("probe", "Contoso.Testing.Probe"))))
    (status,) = view.statuses
    assert (status.code, status.message) == (
        "ProvisioningState/succeeded",
        f"ran on {anyio_backend}",
    )
    heartbeat = view.substatuses[-1]
    assert (heartbeat.code, heartbeat.message) == (
        "ComponentStatus/Heartbeat/Ready",
        f"beating on {anyio_backend}",
    )
    assert view.handler_state == "Enabled"


async def test_a_handler_written_against_asyncio_fails_under_trio(
    tmp_path: Path, anyio_backend: str
) -> None:
    config = RuntimeConfig(
        state_dir=tmp_path / "state", handlers=[AsyncioOnly], load_entry_points=False
    )
    view = only(await apply(config, goal(extension("only", "Contoso.Testing.AsyncioOnly"))))
    (status,) = view.statuses
    if anyio_backend == "asyncio":
        assert (status.code, status.message) == ("ProvisioningState/succeeded", "slept")
    else:
        assert status.code == "ProvisioningState/failed/-1"
        assert status.message.startswith("no running event loop")


async def test_an_in_process_enable_that_hangs_is_cancelled_with_1011(tmp_path: Path) -> None:
    config = RuntimeConfig(
        state_dir=tmp_path / "state",
        handlers=[Sleeper],
        load_entry_points=False,
        command_timeout=0.5,
    )
    view = only(await apply(config, goal(extension("sleeper", "Contoso.Testing.Sleeper"))))
    assert view.statuses[0].code == "ProvisioningState/failed/1011"


def package_config(agent: Agent, **options: Any) -> RuntimeConfig:
    return RuntimeConfig(
        state_dir=agent.state,
        repositories=[agent.repo],
        load_entry_points=False,
        boot_id_path=agent.root / "boot_id",
        **options,
    )


async def test_a_package_runs_as_a_process(agent: Agent, packages: Packages) -> None:
    packages.build()
    view = only(await apply(package_config(agent), goal(extension("ext"))))
    assert view.statuses[0].code == "ProvisioningState/succeeded"
    assert view.statuses[0].message == "enabled Test.Ext-1.0.0 seq 0"
    assert [op.short for op in agent.ops()] == ["install Test.Ext-1.0.0", "enable Test.Ext-1.0.0"]


async def test_a_hung_package_command_is_killed_with_its_grandchildren(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    packages.build(actions={"enable": f'sleep 600 & echo $! > "{pids}"; sleep 600'})
    config = package_config(agent, command_timeout=0.5, kill_grace=0.5)
    view = only(await apply(config, goal(extension("ext"))))
    assert view.statuses[0].code == "ProvisioningState/failed/1011"
    grandchild = int(pids.read_text())
    with anyio.fail_after(60):  # a safety net: the kill is awaited, not timed
        while True:
            if not alive(grandchild):
                break
            await anyio.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, waiting to be reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
