"""The status uploader: when it uploads (changes, heartbeat, backoff), what (the latest
document only), and that it never holds up the engine. Driven by a fake clock against a
stdlib HTTP server that answers as told; the SAS in its URLs makes it an Azure blob."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from exthandler._report.view import ExtensionView, InstanceView, StatusView
from exthandler._upload.document import OsInfo
from exthandler._upload.uploader import StatusUploader
from tests.sdk.put_server import Answer, PutServer, put_server

SECRET = "UploadSignature%2Fabc%3D"
SAS = f"sv=2019-12-12&sp=rw&sig={SECRET}"


class FakeClock:
    """Time that passes only when `advance` says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, anyio.Event]] = []

    def monotonic(self) -> float:
        return self.now

    def utc_now(self) -> datetime:
        return datetime(2026, 11, 25, 12, 0, tzinfo=UTC) + timedelta(seconds=self.now)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.now:
            return
        entry = (deadline, anyio.Event())
        self.sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            self.sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, event in self.sleepers:
            if due <= self.now + 1e-9:
                event.set()

    def next_wake(self) -> float | None:
        """Seconds until the earliest sleeper wakes."""
        if not self.sleepers:
            return None
        return min(due for due, _ in self.sleepers) - self.now


class Status:
    """The instance view the uploader reads: one extension whose message tests change."""

    def __init__(self) -> None:
        self.message = "starting"

    def view(self) -> InstanceView:
        status = StatusView(
            code="ProvisioningState/succeeded",
            level="Info",
            display_status="Provisioning succeeded",
            message=self.message,
            time="2026-11-25T12:00:00Z",
        )
        ext = ExtensionView(
            name="web",
            type="Contoso.Fleet.Web",
            type_handler_version="1.0.0",
            handler_state="Enabled",
            sequence_number=0,
            statuses=(status,),
            substatuses=(),
        )
        return InstanceView(goal_state_id="g", extensions=(ext,))


def message_of(body: bytes) -> str:
    document = json.loads(body)
    entry = document["aggregateStatus"]["handlerAggregateStatus"][0]
    text: str = entry["runtimeSettingsStatus"]["settingsStatus"]["status"]["formattedMessage"][
        "message"
    ]
    return text


@pytest.fixture
def server() -> Iterator[PutServer]:
    with put_server() as running:
        yield running


class Rig:
    """An uploader on a fake clock, the view it reads, and the lines it logged."""

    def __init__(self, server: PutServer, **options: Any) -> None:
        self.clock, self.status = FakeClock(), Status()
        self.lines: list[tuple[int, str]] = []
        values: dict[str, Any] = {
            "view": self.status.view,
            "default_url": server.url(f"/fleet/web-01.status?{SAS}"),
            "clock": self.clock,
            "random": lambda: 1.0,
            "log": lambda message, level: self.lines.append((level, message)),
            "os": OsInfo(computer_name="web-01", os_name="linux", os_version="6"),
            "timeout": 5.0,
        }
        values.update(options)
        self.up = StatusUploader(**values)


async def until(check: Callable[[], bool]) -> None:
    """Let the uploader's task (and the server's thread) run until `check` holds."""
    with anyio.fail_after(30):
        while not check():  # noqa: ASYNC110 (the server answers from its own thread)
            await anyio.sleep(0.005)


async def settle() -> None:
    """Give the uploader's task time to act, were it to (asserted on afterwards)."""
    await anyio.sleep(0.05)


def run_with(test: Callable[[Rig], Awaitable[None]], server: PutServer, **options: Any) -> Rig:
    rig = Rig(server, **options)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(rig.up.run)
            await test(rig)
            group.cancel_scope.cancel()

    anyio.run(main)
    return rig


def test_a_long_outage_ends_with_the_latest_status_only(server: PutServer) -> None:
    server.default = Answer(500)

    async def test(rig: Rig) -> None:
        up, clock, status = rig.up, rig.clock, rig.status
        up.changed()
        await until(lambda: up.stats.failures == 1)  # tried, and answered
        delays = []
        for step in range(1, 40):  # hours of failures, in fake time
            status.message = f"step {step}"
            up.changed()
            await until(lambda: clock.next_wake() is not None)
            delay = clock.next_wake()
            assert delay is not None
            delays.append(delay)
            clock.advance(delay)
            await until(lambda step=step: up.stats.failures == step + 1)  # type: ignore[misc]
        # Backoff doubles from the interval up to its cap.
        assert delays[:7] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
        assert clock.now > 2 * 3600
        status.message = "latest"
        up.changed()
        server.default = Answer(201)
        clock.advance(300)
        await until(lambda: up.stats.uploads == 1)
        # Nothing more: the status has not changed since, and the heartbeat is not due.
        clock.advance(30)
        await settle()

    rig = run_with(test, server)
    bodies = server.bodies("/fleet/web-01.status")
    assert rig.up.stats.attempts == rig.up.stats.failures + 1 == 41 == len(bodies)
    # Each try carried the status of its moment; the one that worked, the latest.
    assert [message_of(b) for b in bodies[:-1]] == ["starting"] + [
        f"step {n}" for n in range(1, 40)
    ]
    assert message_of(bodies[-1]) == "latest"
    # One warning for the whole outage (its reason never changed), one line when it ended.
    levels = [level for level, _ in rig.lines]
    assert levels == [logging.WARNING, logging.INFO]
    assert "HTTP 500" in rig.lines[0][1]
    assert all(SECRET not in line and "UploadSignature" not in line for _, line in rig.lines)


def test_changes_are_uploaded_at_most_once_per_interval(server: PutServer) -> None:
    async def test(rig: Rig) -> None:
        up, clock, status = rig.up, rig.clock, rig.status
        up.changed()
        await until(lambda: up.stats.uploads == 1)
        for n in range(50):  # a burst of changes within one interval
            status.message = f"burst {n}"
            up.changed()
            await anyio.lowlevel.checkpoint()
        clock.advance(5)
        await settle()
        assert up.stats.attempts == 1
        clock.advance(5)
        await until(lambda: up.stats.uploads == 2)
        clock.advance(20)  # nothing changed since: nothing to upload
        await settle()
        assert up.stats.attempts == 2

    rig = run_with(test, server)
    assert [message_of(b) for b in server.bodies("/fleet/web-01.status")] == [
        "starting",
        "burst 49",
    ]
    assert rig.up.stats.failures == 0


def test_an_unchanged_status_is_uploaded_again_at_the_heartbeat(server: PutServer) -> None:
    async def test(rig: Rig) -> None:
        up, clock = rig.up, rig.clock
        up.changed()
        await until(lambda: up.stats.uploads == 1)
        for _ in range(10):  # views published again and again, with nothing new
            up.changed()
            await anyio.lowlevel.checkpoint()
        clock.advance(59)
        await settle()
        assert up.stats.uploads == 1
        clock.advance(1)
        await until(lambda: up.stats.uploads == 2)
        clock.advance(60)
        await until(lambda: up.stats.uploads == 3)

    run_with(test, server, heartbeat=60.0)
    first, second, third = (json.loads(b) for b in server.bodies("/fleet/web-01.status"))
    assert first["timestampUTC"] == "2026-11-25T12:00:00Z"
    assert second["timestampUTC"] == "2026-11-25T12:01:00Z"
    assert third["timestampUTC"] == "2026-11-25T12:02:00Z"
    assert first["aggregateStatus"] == second["aggregateStatus"]


def test_nothing_is_uploaded_before_anything_is_reported(server: PutServer) -> None:
    async def test(rig: Rig) -> None:
        clock = rig.clock
        clock.advance(3600)
        await settle()

    rig = run_with(test, server)
    assert rig.up.stats.attempts == 0
    assert server.seen == []


@pytest.mark.parametrize("azure", [True, False], ids=["sas-blob", "plain-put"])
def test_a_server_that_never_answers_costs_only_the_uploader(
    server: PutServer, azure: bool
) -> None:
    server.default = Answer(0)  # holds every request until the test ends
    query = SAS if azure else f"token={SECRET}"

    async def test(rig: Rig) -> None:
        up, status = rig.up, rig.status
        up.changed()
        await until(lambda: len(server.seen) == 1)
        # While the upload hangs, everything else goes on: changes are taken at once.
        for n in range(100):
            status.message = f"meanwhile {n}"
            up.changed()
        await until(lambda: up.stats.failures == 1)  # the request's own timeout
        assert up.stats.attempts == 1

    rig = run_with(test, server, timeout=0.5, default_url=server.url(f"/fleet/s?{query}"))
    ((level, line),) = rig.lines
    assert level == logging.WARNING
    assert ("no answer within 0.5 s" in line) is azure
    assert "UploadSignature" not in line


def test_the_goal_states_blob_wins_and_a_bad_one_is_logged(server: PutServer) -> None:
    from exthandler import parse_goal_state

    blob = server.url(f"/vhds/from-goal.status?{SAS}")
    xml = (
        f'<Extensions><Plugins/><StatusUploadBlob statusBlobType="PageBlob">'
        f"{blob.replace('&', '&amp;')}</StatusUploadBlob></Extensions>"
    )
    goal = parse_goal_state(xml)
    bad = parse_goal_state(
        f"<Extensions><Plugins/><StatusUploadBlob>ftp://h/b?sig={SECRET}</StatusUploadBlob>"
        "</Extensions>"
    )

    async def test(rig: Rig) -> None:
        up, clock = rig.up, rig.clock
        up.goal_started(goal)
        up.goal_finished(goal)
        await until(lambda: up.stats.uploads == 1)
        up.goal_started(bad)
        clock.advance(3600)
        await settle()

    rig = run_with(test, server)
    create, page = server.seen
    assert create.path == f"/vhds/from-goal.status?{SAS}"
    assert create.headers["x-ms-blob-type"] == "PageBlob"
    assert page.headers["x-ms-page-write"] == "update"
    assert server.bodies("/fleet/web-01.status") == []
    assert rig.up.stats.attempts == 1
    (level, line), *_ = rig.lines
    assert level == logging.ERROR
    assert line == (
        "cannot upload the status: ftp://h/b?sig=<redacted>: a status blob must be an http(s) URL"
    )


def test_flush_uploads_what_is_pending_at_once(server: PutServer) -> None:
    async def test(rig: Rig) -> None:
        up, status = rig.up, rig.status
        up.changed()
        await until(lambda: up.stats.uploads == 1)
        status.message = "final"
        up.changed()
        assert await up.flush()  # within the interval: flush does not wait for it
        assert await up.flush()  # the destination holds it: nothing sent
        assert up.stats.attempts == 2

    run_with(test, server)
    assert [message_of(b) for b in server.bodies("/fleet/web-01.status")] == ["starting", "final"]
