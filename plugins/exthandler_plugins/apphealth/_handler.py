"""`Microsoft.ManagedServices.ApplicationHealthLinux`: report how a local application does.

Enable checks the settings (`_settings`), reports `Initializing` and starts the probe in a
background worker (`ctx.start_worker`), which outlives the command: it probes localhost
every `intervalInSeconds` (`_probe`), and rewrites the status file and the heartbeat
whenever the reported state changes, and at least every `REFRESH` seconds. The SDK
replaces the worker on a new sequence number and stops it on disable and uninstall; the
handler sets `enable_runs_on_same_sequence` so that the agent's enable after a reboot
starts it again.

The status is always `success` (the extension works; the application may not), with the
two substatus entries of the reference extension: `AppHealthStatus` ("Application found
to be healthy" / "... unhealthy") and `ApplicationHealthState` (the state's name).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import ClassVar

import anyio
from exthandler_sdk import Context, Handler, StatusLevel, Substatus
from exthandler_sdk.protocol import parse_status, status_file_name

from ._probe import HealthState, Result, StateMachine, probe
from ._settings import ApplicationHealthSettings, Plan, resolve

__all__ = [
    "HEALTHY_TEXT",
    "REFRESH",
    "SECOND_VARIABLE",
    "STATE_SUBSTATUS",
    "STATUS_SUBSTATUS",
    "UNHEALTHY_TEXT",
    "ApplicationHealth",
    "substatus",
]

STATUS_SUBSTATUS = "AppHealthStatus"
STATE_SUBSTATUS = "ApplicationHealthState"
HEALTHY_TEXT = "Application found to be healthy"
UNHEALTHY_TEXT = "Application found to be unhealthy"
REFRESH = 60.0
"""Seconds after which the status and heartbeat are rewritten even without a change."""
PROBE_TIMEOUT = 30.0
"""Seconds one probe may take at most (less when the interval is shorter)."""
PROBE_TIMEOUT_FLOOR = 2.0
"""Real seconds a probe always gets, however short a second of the settings lasts: a busy
machine must not turn a slow answer from localhost into `Unknown` in a scaled-down run."""
SECOND_VARIABLE = "EXTHANDLER_APPHEALTH_SECOND"
"""Test knob: how long one second of the settings lasts, in seconds (default 1)."""
_STATUS_READ_LIMIT = 256 * 1024

Ctx = Context[ApplicationHealthSettings, None]


def substatus(state: HealthState) -> list[Substatus]:
    """The two substatus entries that report `state`."""
    healthy = state is HealthState.HEALTHY
    if healthy:
        level = StatusLevel.SUCCESS
    elif state is HealthState.INITIALIZING:
        level = StatusLevel.TRANSITIONING
    else:
        level = StatusLevel.ERROR
    return [
        Substatus(
            name=STATUS_SUBSTATUS,
            status=level,
            message=HEALTHY_TEXT if healthy else UNHEALTHY_TEXT,
        ),
        Substatus(name=STATE_SUBSTATUS, status=StatusLevel.SUCCESS, message=state.value),
    ]


def _second() -> float:
    """One second of the settings, in seconds: 1 unless the test knob says otherwise."""
    with contextlib.suppress(KeyError, ValueError):
        value = float(os.environ[SECOND_VARIABLE])
        if 0.001 <= value <= 1.0:
            return value
    return 1.0


class ApplicationHealth(Handler[ApplicationHealthSettings, None]):
    """Probes an application on localhost and reports its health state."""

    name = "Microsoft.ManagedServices.ApplicationHealthLinux"
    version = "2.0.0"
    report_heartbeat: ClassVar[bool] = True
    # The probe must run again after a reboot, for the same sequence number.
    enable_runs_on_same_sequence: ClassVar[bool] = True

    async def enable(self, ctx: Ctx) -> None:
        plan = resolve(ctx.settings)
        state = _reported_state(ctx) or HealthState.INITIALIZING
        await ctx.status.success(_message(state, plan, None), substatus=substatus(state))
        pid = await ctx.start_worker(self.probe)
        ctx.log.info("probing %s from worker %d", plan.target, pid)

    async def uninstall(self, ctx: Ctx) -> None:
        await ctx.stop_worker()

    async def probe(self, ctx: Ctx) -> None:
        """The worker: probe until stopped, reporting each change and every `REFRESH`."""
        plan = resolve(ctx.settings)
        second = _second()
        interval = plan.interval * second
        timeout = max(min(PROBE_TIMEOUT, float(plan.interval)) * second, PROBE_TIMEOUT_FLOOR)
        refresh = REFRESH * second
        machine = StateMachine(plan.probes)
        started = time.monotonic()
        await _report(ctx, plan, machine.state, None)
        reported, last_write = machine.state, time.monotonic()
        next_probe = started
        while True:
            result = await probe(plan, timeout)
            now = time.monotonic()
            grace_over = now - started >= plan.grace * second
            state = machine.observe(result.state, grace_over)
            if state is not reported or now - last_write >= refresh:
                if state is not reported:
                    ctx.log.info("application health: %s (%s)", state.value, result.detail)
                else:
                    ctx.log.info("application health still %s (%s)", state.value, result.detail)
                await _report(ctx, plan, state, result)
                reported, last_write = state, time.monotonic()
            # Every interval from the start; after a probe that took longer, from now.
            next_probe = max(next_probe + interval, time.monotonic())
            await anyio.sleep(next_probe - time.monotonic())


def _message(state: HealthState, plan: Plan, result: Result | None) -> str:
    text = f"Application health of {plan.target}: {state.value}"
    return text if result is None else f"{text} (last probe: {result.detail})"


async def _report(ctx: Ctx, plan: Plan, state: HealthState, result: Result | None) -> None:
    # The heartbeat first: whoever sees the new state in the status file sees it there too.
    if state in (HealthState.HEALTHY, HealthState.INITIALIZING):
        await ctx.heartbeat.ready(f"Application health: {state.value}")
    else:
        await ctx.heartbeat.not_ready(f"Application health: {state.value}")
    await ctx.status.success(_message(state, plan, result), substatus=substatus(state))


def _reported_state(ctx: Ctx) -> HealthState | None:
    """The state the status file of this sequence number shows, if a probe wrote one: a
    repeated enable that keeps the running worker keeps showing it."""
    path = ctx.environment.status_folder / status_file_name(ctx.extension_name, ctx.sequence_number)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _STATUS_READ_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)
    report = parse_status(data)
    for entry in report.substatus:
        if entry.name == STATE_SUBSTATUS:
            with contextlib.suppress(ValueError):
                return HealthState(entry.message)
    return None
