"""run_operation: outcomes, settings, status format, refresh, context attributes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from exthandler_sdk import Handler, HandlerError, Operation, SettingsError, _runner, run_operation
from exthandler_sdk._environment import HandlerEnvironmentError
from exthandler_sdk._handler import HandlerDefinitionError
from exthandler_sdk._runner import exit_code_for

from tests.sdk.sample_handlers import (
    Beats,
    Defaults,
    Hello,
    Layout,
    NoBeats,
    Plain,
    Scripted,
    Talker,
    start,
)

pytestmark = pytest.mark.anyio
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def run(
    layout: Layout,
    handler: type[Handler[Any, Any]] = Scripted,
    operation: Operation = Operation.ENABLE,
    seq: int = 0,
    **kwargs: Any,
) -> int:
    env = kwargs.pop("env", None)
    if env is None:
        env = layout.env(seq)
    return await run_operation(
        handler, operation, handler_dir=layout.handler_dir, env=env, **kwargs
    )


async def test_success_writes_the_protocol_status_format(layout: Layout) -> None:
    layout.write_settings(0, {"action": "succeed", "unknownKey": [1, 2]})
    assert await run(layout) == 0
    document = json.loads(layout.status_path(0).read_bytes())
    assert isinstance(document, list)
    assert len(document) == 1
    top = document[0]
    assert set(top) == {"version", "timestampUTC", "status"}
    assert top["version"] == 1.0
    assert TIMESTAMP.fullmatch(top["timestampUTC"])
    body = top["status"]
    assert body == {
        "name": "Contoso.Samples.Hello",
        "operation": "Enable",
        "configurationAppliedTime": body["configurationAppliedTime"],
        "status": "success",
        "code": 0,
        "formattedMessage": {"lang": "en-US", "message": "Enable succeeded"},
    }
    assert TIMESTAMP.fullmatch(body["configurationAppliedTime"])
    assert layout.mrseq() == "0"
    assert layout.runs() == ["enable 0 0 succeed"]


@pytest.mark.parametrize(
    ("code", "exit_code"), [(53, 53), (1009, 1), (0, 1), (-5, 1), (255, 255), (256, 1)]
)
async def test_handler_error_reports_its_code(layout: Layout, code: int, exit_code: int) -> None:
    layout.write_settings(0, {"action": "fail", "code": code, "message": "nope"})
    assert await run(layout) == exit_code
    body = layout.status(0)["status"]
    assert (body["status"], body["code"], body["formattedMessage"]["message"]) == (
        "error",
        code,
        "nope",
    )
    assert layout.mrseq() is None


@pytest.mark.parametrize(("action", "message"), [("raise", "boom"), ("raise-empty", "KeyError")])
async def test_other_exception_is_error_minus_one(
    layout: Layout, action: str, message: str
) -> None:
    layout.write_settings(0, {"action": action, "message": "boom"})
    assert await run(layout) == 1
    body = layout.status(0)["status"]
    assert (body["status"], body["code"], body["formattedMessage"]["message"]) == (
        "error",
        -1,
        message,
    )
    assert "Traceback" in (layout.log_dir / "Hello.log").read_text()


async def test_terminal_status_written_by_the_handler_is_kept(layout: Layout) -> None:
    layout.write_settings(0, {"action": "warning", "code": 3, "message": "careful"})
    assert await run(layout) == 0
    body = layout.status(0)["status"]
    assert (body["status"], body["code"], body["formattedMessage"]["message"]) == (
        "warning",
        3,
        "careful",
    )
    assert layout.mrseq() == "0"


async def test_error_status_written_by_the_handler_sets_the_exit_code(layout: Layout) -> None:
    layout.write_settings(0, {"action": "error-status", "code": 52, "message": "no curl"})
    assert await run(layout) == 52
    assert layout.status(0)["status"]["code"] == 52
    assert layout.mrseq() is None
    assert await run(layout) == 52  # not applied: runs again
    assert len(layout.runs()) == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio has no raisable Cancelled
async def test_handler_cancelling_itself_is_an_error(layout: Layout) -> None:
    layout.write_settings(0, {"action": "cancel-self"})
    assert await run(layout) == 1
    assert layout.status(0)["status"]["status"] == "error"


async def test_substatus_accumulates(layout: Layout) -> None:
    layout.write_settings(0, {"action": "substatus"})
    assert await run(layout) == 0
    body = layout.status(0)["status"]
    assert body["substatus"] == [
        {
            "name": "StdOut",
            "status": "success",
            "code": 0,
            "formattedMessage": {"lang": "en-US", "message": "out " * 10},
        },
        {
            "name": "StdErr",
            "status": "error",
            "code": 2,
            "formattedMessage": {"lang": "en-US", "message": ""},
        },
    ]
    assert body["status"] == "success"


async def test_settings_errors_list_every_field(layout: Layout) -> None:
    layout.write_settings(0, {"retries": "many", "extra": 1}, {"other": "x"})
    assert await run(layout, Hello) == 53
    body = layout.status(0)["status"]
    assert body["code"] == 53
    message = body["formattedMessage"]["message"]
    assert message.splitlines() == [
        "invalid settings:",
        "settings.message: required field missing",
        "settings.retries: invalid value for type, expected int",
        "protectedSettings.token: required field missing",
    ]
    assert layout.runs() == []


async def test_settings_and_secrets_reach_the_handler(layout: Layout) -> None:
    layout.write_settings(0, {"message": "hi", "retries": "4"}, {"token": "s3cret"})
    assert await run(layout, Hello) == 0
    assert layout.runs() == ["enable 0 0 hi"]


async def test_empty_message_is_a_handler_error(layout: Layout) -> None:
    layout.write_settings(0, {"message": ""}, {"token": "t"})
    assert await run(layout, Hello) == 53
    assert layout.status(0)["status"]["formattedMessage"]["message"] == (
        "message must not be empty"
    )


async def test_missing_required_settings(layout: Layout) -> None:
    layout.settings_path(0).write_text("")
    assert await run(layout, Hello) == 53
    assert layout.status(0)["status"]["formattedMessage"]["message"].splitlines()[1:] == [
        "settings: public settings are required",
        "protectedSettings: protected settings are required",
    ]


async def test_defaults_when_no_settings(layout: Layout) -> None:
    layout.settings_path(0).write_text("")
    assert await run(layout, Defaults, Operation.UNINSTALL) == 0
    ctx = Defaults.seen[0]
    assert ctx.settings.level == 1
    assert ctx.protected.names == []
    # A successful uninstall does not report in the sequence's status file.
    assert not layout.status_path(0).exists()


async def test_lifecycle_operations_never_overwrite_the_enable_status(layout: Layout) -> None:
    """Install, update and uninstall report only failures: the enable's outcome stays."""
    layout.write_settings(0, {"whatever": 1})
    assert await run(layout, Plain, Operation.DISABLE) == 0
    assert layout.status(0)["status"]["operation"] == "Disable"  # disable does report
    before = layout.status_path(0).read_bytes()
    for operation in (Operation.INSTALL, Operation.UPDATE, Operation.UNINSTALL):
        assert await run(layout, Plain, operation) == 0
    assert layout.status_path(0).read_bytes() == before


async def test_handler_without_settings_types_ignores_settings(layout: Layout) -> None:
    layout.write_settings(0, {"whatever": 1})
    assert await run(layout, Plain, Operation.DISABLE) == 0
    ctx = Plain.seen[0]
    assert ctx.settings is None
    assert ctx.protected is None


async def test_context_attributes(layout: Layout) -> None:
    layout.write_settings(3, {})
    env = layout.env(
        3,
        VERSION="1.1.0",
        AZURE_GUEST_AGENT_UPDATING_FROM_VERSION="0.9",
        AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE="4",
        AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE="NOT_RUN",
        AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS=json.dumps(
            [{"extensionName": "a", "exitCode": "0"}, {"extensionName": "b", "exitCode": "x"}]
        ),
    )
    assert await run(layout, operation=Operation.UPDATE, seq=3, env=env, time_budget=50.0) == 0
    ctx = Scripted.seen[0]
    assert ctx.sequence_number == 3
    assert ctx.extension_name is None
    assert ctx.handler_dir == layout.handler_dir
    assert ctx.handler_version == "1.0.0"
    assert (ctx.update_to_version, ctx.updating_from_version) == ("1.1.0", "0.9")
    assert ctx.disable_exit_code == 4
    assert ctx.disable_exit_codes == {"a": 0, "b": None}
    assert ctx.uninstall_exit_code is None
    assert ctx.environment.status_folder == layout.handler_dir / "status"
    assert ctx.environment.events_folder == layout.events_dir
    assert 40.0 < ctx.remaining() <= 50.0
    assert not layout.status_path(3).exists()  # a successful update reports nothing


async def test_default_deadline_is_the_agent_timeout(layout: Layout) -> None:
    layout.write_settings(0, {})
    assert await run(layout, operation=Operation.INSTALL) == 0
    assert 890.0 < Scripted.seen[0].remaining() <= 900.0
    assert await run(layout, operation=Operation.INSTALL, time_budget=float("inf")) == 0
    assert Scripted.seen[1].remaining() == float("inf")


async def test_sequence_number_defaults_to_the_newest_settings(layout: Layout) -> None:
    layout.write_settings(2, {"message": "two"})
    layout.write_settings(10, {"message": "ten"})
    (layout.handler_dir / "config" / "junk.settings").write_text("")
    assert await run(layout, env={}) == 0
    assert Scripted.seen[0].sequence_number == 10
    assert Scripted.seen[0].settings.message == "ten"


async def test_disable_uses_the_newest_settings_when_its_own_are_missing(
    layout: Layout,
) -> None:
    layout.write_settings(0, {"message": "old"})
    assert await run(layout, operation=Operation.UPDATE, seq=1) == 0
    assert Scripted.seen[0].settings.message == "old"
    assert Scripted.seen[0].sequence_number == 1
    assert await run(layout, seq=1) == 0  # enable never falls back
    assert Scripted.seen[1].settings.message == "done"


async def test_multi_config_names(layout: Layout) -> None:
    layout.write_settings(1, {"action": "succeed"}, extension="ext1")
    env = layout.env(1, ConfigExtensionName="ext1")
    assert await run(layout, seq=1, env=env) == 0
    body = layout.status(1, "ext1")["status"]
    assert (body["name"], body["status"]) == ("ext1", "success")
    assert layout.mrseq("ext1") == "1"
    assert layout.mrseq() is None
    assert Scripted.seen[0].extension_name == "ext1"


async def test_periodic_refresh_rewrites_transitioning(layout: Layout) -> None:
    layout.write_settings(0, {"action": "sleep", "seconds": 0.6})
    stamps: set[str] = set()
    async with anyio.create_task_group() as group:
        task = start(group, lambda: run(layout, status_refresh=0.05))
        for _ in range(60):
            await anyio.sleep(0.05)
            if layout.status_path(0).exists():
                top = layout.status(0)
                if top["status"]["status"] == "transitioning":
                    stamps.add(top["timestampUTC"])
            if task.done.is_set():
                break
    assert await task.wait() == 0
    assert len(stamps) >= 1
    assert layout.status(0)["status"]["status"] == "success"


async def test_refresh_gives_a_new_timestamp(layout: Layout) -> None:
    layout.write_settings(0, {"action": "sleep", "seconds": 30})
    async with anyio.create_task_group() as group:
        start(group, lambda: run(layout, status_refresh=0.05))
        stamps: list[str] = []
        with anyio.fail_after(20):  # timestamps have a resolution of one second
            while len(set(stamps)) < 2:
                await anyio.sleep(0.05)
                with contextlib.suppress(FileNotFoundError):
                    top = layout.status(0)
                    assert top["status"]["status"] == "transitioning"
                    assert top["status"]["formattedMessage"]["message"] == "sleeping"
                    stamps.append(top["timestampUTC"])
        group.cancel_scope.cancel()
    assert layout.runs() == ["enable 0 0 sleep"]


async def test_cancellation_propagates_and_stops_the_work(layout: Layout) -> None:
    layout.write_settings(0, {"action": "sleep", "seconds": 30})
    async with anyio.create_task_group() as group:
        task = start(group, lambda: run(layout, status_refresh=0.05))
        await anyio.sleep(0.3)
        group.cancel_scope.cancel()
    assert task.cancelled
    assert layout.runs() == ["enable 0 0 sleep"]
    assert layout.mrseq() is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancelling_the_asyncio_task_propagates_and_stops_the_work(
    layout: Layout,
) -> None:
    layout.write_settings(0, {"action": "sleep", "seconds": 30})
    task = asyncio.ensure_future(run(layout, status_refresh=0.05))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert layout.runs() == ["enable 0 0 sleep"]
    assert layout.mrseq() is None


@pytest.mark.parametrize("refresh", [60.0, 0.05])
async def test_a_timeout_around_the_operation_stops_the_work(
    layout: Layout, refresh: float
) -> None:
    # Before and after the refresher and the watcher start (the first status refresh).
    layout.write_settings(0, {"action": "sleep", "seconds": 30})
    with anyio.move_on_after(0.3) as scope:
        await run(layout, status_refresh=refresh)
    assert scope.cancelled_caught
    assert layout.runs() == ["enable 0 0 sleep"]
    assert layout.status(0)["status"]["status"] == "transitioning"
    assert layout.mrseq() is None
    layout.write_settings(0, {"action": "succeed"})
    assert await run(layout) == 0  # the run-once lock was released
    assert layout.runs() == ["enable 0 0 sleep", "enable 0 0 succeed"]


async def test_heartbeat(layout: Layout) -> None:
    assert await run(layout, Beats) == 0
    document = json.loads((layout.handler_dir / "heartbeat.log").read_bytes())
    assert document[0]["version"] == "1.0"
    beat = document[0]["heartbeat"]
    assert (beat["status"], beat["code"], beat["formattedMessage"]["lang"]) == (
        "NotReady",
        7,
        "en-US",
    )
    message = beat["formattedMessage"]["message"]
    assert len(message) == 1024
    assert message.startswith("[TRUNCATED] ... ")
    assert message.endswith("x")


async def test_heartbeat_needs_the_class_attribute(layout: Layout) -> None:
    assert await run(layout, NoBeats) == 1
    message = layout.status(0)["status"]["formattedMessage"]["message"]
    assert "report_heartbeat = True" in message
    assert not (layout.handler_dir / "heartbeat.log").exists()


async def test_events_and_log(layout: Layout) -> None:
    assert await run(layout, Talker) == 0
    files = sorted(layout.events_dir.iterdir())
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(re.fullmatch(r"[0-9]+\.json", f.name) for f in files)
    events = [json.loads(f.read_bytes()) for f in files]
    assert [e["EventLevel"] for e in events] == ["Informational", "Warning", "Error", "Verbose"]
    first = events[0]
    assert set(first) == {
        "Version",
        "Timestamp",
        "TaskName",
        "EventLevel",
        "Message",
        "EventPid",
        "EventTid",
        "OperationId",
    }
    assert (first["Version"], first["TaskName"], first["OperationId"]) == ("1.0.0", "t1", "op-1")
    assert events[1]["TaskName"] == "enable"
    assert events[1]["OperationId"] == events[2]["OperationId"] != "op-1"
    assert len(events[3]["Message"]) == 3072
    log = (layout.log_dir / "Hello.log").read_text(encoding="utf-8")
    assert "héllo from the handler" in log


async def test_bad_definitions_and_environment(layout: Layout, tmp_path: Path) -> None:
    class Nameless(Handler[None, None]):
        pass

    with pytest.raises(HandlerDefinitionError):
        await run(layout, Nameless)
    with pytest.raises(HandlerEnvironmentError):
        await run_operation(Plain, Operation.ENABLE, handler_dir=tmp_path, env={})
    with pytest.raises(HandlerEnvironmentError, match="ConfigSequenceNumber"):
        await run(layout, Plain, env={"ConfigSequenceNumber": "x"})


async def test_unreadable_settings_file_is_error_53(layout: Layout) -> None:
    layout.settings_path(0).write_text("{not json")
    assert await run(layout) == 53
    assert "0.settings: not valid JSON" in layout.status(0)["status"]["formattedMessage"]["message"]


def test_exit_code_for() -> None:
    assert [exit_code_for(c) for c in (-1, 0, 1, 53, 255, 256, 1009)] == [1, 1, 1, 53, 255, 1, 1]


def test_settings_error_is_a_handler_error() -> None:
    error = SettingsError(["a: b", "c: d"])
    assert isinstance(error, HandlerError)
    assert (error.code, error.errors) == (53, ("a: b", "c: d"))


def test_implements_tells_own_operations_from_the_base_classes() -> None:
    class Base(Handler[None, None]):
        name = "Contoso.Base"
        version = "1.0"

        async def install(self, ctx: Any) -> None:
            pass

    class Child(Base):
        async def uninstall(self, ctx: Any) -> None:
            pass

    assert not Handler.implements("install")
    assert Base.implements(Operation.INSTALL)
    assert not Base.implements("uninstall")
    assert Child.implements("install")  # inherited from a class of its own
    assert Child.implements("uninstall")
    assert not Child.implements("update")
    with pytest.raises(ValueError, match="'upgrade'"):
        Child.implements("upgrade")


class Quiet(Handler[None, None]):
    """An enable that takes `pause` seconds and reports nothing itself."""

    name = "Contoso.Quiet"
    version = "1.0"
    pause: ClassVar[float] = 0.0
    seen_on_disk: ClassVar[list[bool]] = []

    async def enable(self, ctx: Any) -> None:
        type(self).seen_on_disk.append(ctx.status.path.exists())
        await anyio.sleep(self.pause)


async def test_a_quick_enable_writes_only_its_outcome(layout: Layout) -> None:
    Quiet.seen_on_disk = []
    assert await run(layout, Quiet) == 0
    assert Quiet.seen_on_disk == [False]  # no transitioning that success replaces at once
    assert layout.status(0)["status"]["status"] == "success"


async def test_a_long_enable_reports_transitioning_after_the_first_delay(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runner, "FIRST_REPORT", 0.05)
    monkeypatch.setattr(Quiet, "pause", 0.6)
    seen: list[tuple[str, str]] = []
    async with anyio.create_task_group() as group:
        task = start(group, lambda: run(layout, Quiet))
        while not task.done.is_set():
            await anyio.sleep(0.02)
            with contextlib.suppress(FileNotFoundError):
                top = layout.status(0)["status"]
                seen.append((top["status"], top["formattedMessage"]["message"]))
    assert await task.wait() == 0
    assert ("transitioning", "Enable in progress") in seen
    assert seen[-1] == ("success", "Enable succeeded")


class Scoped(Handler[None, None]):
    """Opens cancel scopes before its first suspension and closes them after it, and
    runs a worker thread and a task group of its own inside them."""

    name = "Contoso.Testing.Scoped"
    version = "1.0.0"
    steps: ClassVar[list[str]] = []

    async def enable(self, ctx: Any) -> None:
        steps = type(self).steps
        with anyio.fail_after(30):
            steps.append("scope entered")
            with anyio.move_on_after(0.05) as inner:
                await anyio.sleep(30)  # the first suspension: cut short by the inner scope
            steps.append(f"inner cut short: {inner.cancelled_caught}")
            steps.append(await anyio.to_thread.run_sync(lambda: "thread"))
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)
            steps.append("scope left")


async def test_scopes_opened_before_the_first_suspension_work_across_it(layout: Layout) -> None:
    Scoped.steps.clear()
    assert await run(layout, Scoped) == 0
    assert Scoped.steps == ["scope entered", "inner cut short: True", "thread", "scope left"]
    assert layout.status(0)["status"]["status"] == "success"


async def test_only_an_operation_that_lasts_starts_the_refresher(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    real = _runner._refresh_forever

    async def counting(*args: Any) -> None:
        started.append("refresher")
        await real(*args)

    monkeypatch.setattr(_runner, "_refresh_forever", counting)
    layout.write_settings(0, {"action": "succeed"})
    assert await run(layout, status_refresh=0.01) == 0
    layout.write_settings(1, {"action": "sleep", "seconds": 0.5})
    assert await run(layout, seq=1, status_refresh=0.01) == 0
    assert started == ["refresher"]  # the sleeping enable only
