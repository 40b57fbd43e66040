"""`exthandler_sdk.protocol`: every render/parse pair round-trips, and renders keep the limits."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from exthandler_sdk import protocol
from exthandler_sdk.protocol import (
    EVENT_MAX_SIZE,
    EXCERPT_LIMIT,
    STATUS_FILE_LIMIT,
    HandlerEnvironment,
    HandlerManifest,
    HeartbeatState,
    Operation,
    RawSettings,
    ResourceLimits,
    StatusLevel,
    Substatus,
    TelemetryEvent,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=150, deadline=None)

# Printable text without lone surrogates (parsers replace those so the text can be shown).
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
LEVELS = st.sampled_from(list(StatusLevel))
CODES = st.integers(min_value=-(2**31), max_value=2**31)
SUBSTATUS = st.builds(Substatus, name=TEXT, status=LEVELS, message=TEXT, code=CODES)


@FAST
@given(
    name=TEXT,
    operation=st.sampled_from(list(Operation)),
    status=LEVELS,
    code=CODES,
    message=TEXT,
    substatus=st.lists(SUBSTATUS, max_size=4),
    applied=st.none() | st.just("2026-11-25T12:00:01Z"),
)
def test_status_round_trips(
    name: str,
    operation: Operation,
    status: StatusLevel,
    code: int,
    message: str,
    substatus: list[Substatus],
    applied: str | None,
) -> None:
    data = protocol.render_status(
        name=name,
        operation=operation,
        status=status,
        code=code,
        message=message,
        substatus=substatus,
        timestamp="2026-11-25T12:00:00Z",
        applied_time=applied,
    )
    report = protocol.parse_status(data)
    assert report.invalid is None
    assert (report.name, report.operation) == (name, operation.display_name)
    assert (report.status, report.code, report.message) == (status, code, message)
    assert report.substatus == tuple(substatus)
    assert report.timestamp == "2026-11-25T12:00:00Z"
    assert report.configuration_applied_time == applied


@settings(max_examples=20, deadline=None)
@given(
    message=st.integers(min_value=0, max_value=200_000),
    entries=st.integers(min_value=0, max_value=40),
    size=st.integers(min_value=0, max_value=30_000),
)
def test_a_rendered_status_always_fits_and_parses(message: int, entries: int, size: int) -> None:
    substatus = [Substatus(name=f"s{i}", message="m" * size) for i in range(entries)]
    data = protocol.render_status(
        name="ext",
        operation=Operation.ENABLE,
        status=StatusLevel.ERROR,
        code=1,
        message="x" * message,
        substatus=substatus,
        timestamp="2026-11-25T12:00:00Z",
    )
    assert len(data) <= STATUS_FILE_LIMIT
    report = protocol.parse_status(data)
    assert report.invalid is None
    assert report.status is StatusLevel.ERROR


@FAST
@given(
    state=st.sampled_from([HeartbeatState.READY, HeartbeatState.NOT_READY]),
    code=CODES,
    message=TEXT,
)
def test_heartbeat_round_trips(state: HeartbeatState, code: int, message: str) -> None:
    beat = protocol.parse_heartbeat(protocol.render_heartbeat(state, code, message), age_seconds=0)
    assert beat == protocol.Heartbeat(state=state, code=code, message=message)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@FAST
@given(
    public=st.none() | st.dictionaries(TEXT, JSON, max_size=4),
    protected=st.none() | st.from_regex(r"[A-Za-z0-9+/]{4,40}={0,2}", fullmatch=True),
    thumbprint=st.none() | st.from_regex(r"[0-9A-F]{40}", fullmatch=True),
)
def test_settings_round_trip(
    public: dict[str, Any] | None, protected: str | None, thumbprint: str | None
) -> None:
    data = protocol.render_settings(public, protected, thumbprint)
    parsed = protocol.parse_settings(data)
    assert parsed == RawSettings(public=public, protected=protected, thumbprint=thumbprint)


SEGMENT = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
ABSOLUTE = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda p: PurePosixPath("/", *p))


@FAST
@given(
    name=st.none() | TEXT,
    folders=st.lists(ABSOLUTE, min_size=4, max_size=4),
    events=st.none() | ABSOLUTE,
)
def test_handler_environment_round_trips(
    name: str | None, folders: list[PurePosixPath], events: PurePosixPath | None
) -> None:
    log, config, status, heartbeat = (Path(folder) for folder in folders)
    environment = HandlerEnvironment(
        name=name,
        log_folder=log,
        config_folder=config,
        status_folder=status,
        heartbeat_file=heartbeat,
        events_folder=None if events is None else Path(events),
    )
    data = protocol.render_handler_environment(environment)
    assert protocol.parse_handler_environment(data, Path("/elsewhere")) == environment


COMMAND = st.from_regex(r"[A-Za-z0-9_./-]([A-Za-z0-9_./ -]{0,20}[A-Za-z0-9_./-])?", fullmatch=True)
REQUIRED = (Operation.INSTALL, Operation.ENABLE, Operation.DISABLE, Operation.UNINSTALL)


@st.composite
def manifests(draw: st.DrawFn) -> HandlerManifest:
    commands = {operation: draw(COMMAND) for operation in REQUIRED}
    if draw(st.booleans()):
        commands[Operation.UPDATE] = draw(COMMAND)
    positive = st.none() | st.integers(min_value=1, max_value=10_000)
    return HandlerManifest(
        name=draw(st.none() | TEXT),
        version=draw(st.none() | st.sampled_from(["1.0", "2.5", "1.0.0", "01.0", "v3"])),
        commands=commands,
        reboot_after_install=draw(st.booleans()),
        report_heartbeat=draw(st.booleans()),
        update_mode=draw(st.sampled_from(["UpdateWithInstall", "UpdateWithoutInstall", "x"])),
        continue_on_update_failure=draw(st.booleans()),
        supports_multiple_extensions=draw(st.booleans()),
        resource_limits=ResourceLimits(
            cpu_quota_percentage=draw(positive), memory_quota_mb=draw(positive)
        ),
        in_process=draw(st.none() | st.just("package.module:Handler")),
    )


@FAST
@given(manifest=manifests(), indent=st.none() | st.just(2))
def test_manifest_round_trips(manifest: HandlerManifest, indent: int | None) -> None:
    data = protocol.render_manifest(manifest, indent=indent)
    assert protocol.parse_manifest(data) == manifest


def test_a_numeric_manifest_version_is_written_as_a_number() -> None:
    document = json.loads(protocol.render_manifest(HandlerManifest(version="1.0")))
    assert document[0]["version"] == 1.0


FIELD = st.text(st.characters(codec="utf-8"), max_size=30)


@FAST
@given(fields=st.lists(FIELD, min_size=8, max_size=8), message=st.text(max_size=5000))
def test_event_round_trips_within_the_limits(fields: list[str], message: str) -> None:
    version, timestamp, task, level, pid, tid, operation_id, handler = fields
    text = protocol.render_event(
        version=version,
        timestamp=timestamp,
        task_name=task,
        event_level=level,
        message=message,
        event_pid=pid,
        event_tid=tid,
        operation_id=operation_id,
    )
    assert text is not None
    assert len(text) <= EVENT_MAX_SIZE
    raw = protocol.parse_event_file(text.encode("ascii"))
    assert isinstance(raw, list)
    event = protocol.parse_event(raw[0], handler=handler)
    assert isinstance(event, TelemetryEvent)
    kept = message[: len(event.message)]
    kept = kept.encode("utf-8", "replace").decode("utf-8")
    assert event.message == kept
    assert event == TelemetryEvent(
        handler=handler,
        version=version,
        timestamp=timestamp,
        task_name=task,
        event_level=level,
        message=event.message,
        event_pid=pid,
        event_tid=tid,
        operation_id=operation_id,
    )
    if len(message) <= 1000 and message == kept:
        assert event.message == message


EXTENSION = st.from_regex(protocol.EXTENSION_NAME_PATTERN, fullmatch=True)


@FAST
@given(extension=st.none() | EXTENSION, sequence=st.integers(min_value=0, max_value=10**9))
def test_settings_file_names_round_trip(extension: str | None, sequence: int) -> None:
    name = protocol.settings_file_name(extension, sequence)
    assert protocol.parse_settings_file_name(name) == (extension, sequence)


@FAST
@given(
    handler=st.from_regex(protocol.HANDLER_NAME_PATTERN, fullmatch=True),
    version=st.from_regex(protocol.VERSION_PATTERN, fullmatch=True),
)
def test_package_file_names_round_trip(handler: str, version: str) -> None:
    name = protocol.package_file_name(handler, version)
    assert protocol.split_package_file_name(name) == (handler, version)


@FAST
@given(stdout=st.text(max_size=5000), stderr=st.text(max_size=5000))
def test_an_excerpt_keeps_both_tails_within_the_limit(stdout: str, stderr: str) -> None:
    excerpt = protocol.format_excerpt(stdout, stderr)
    assert len(excerpt) <= EXCERPT_LIMIT
    match = re.fullmatch(r"\[stdout\]\n(.*)\n\n\[stderr\]\n(.*)", excerpt, re.S)
    assert match is not None
    assert stdout.endswith(match.group(1))
    assert stderr.endswith(match.group(2))


def test_the_public_surface_is_sorted_and_complete() -> None:
    assert protocol.__all__ == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
