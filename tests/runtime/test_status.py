"""Status and heartbeat files, read with the reference agent's coercions (docs/protocol.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from exthandler_sdk import StatusLevel
from exthandler_sdk.protocol import (
    HEARTBEAT_MAX_AGE,
    STATUS_FILE_LIMIT,
    SUBSTATUS_FIELD_LIMIT,
    TRUNCATED_SUFFIX,
    Heartbeat,
    HeartbeatState,
    StatusReport,
    parse_heartbeat,
    parse_status,
)
from exthandler_sdk.protocol import STATUS_MESSAGE_LIMIT as MESSAGE_LIMIT
from exthandler_sdk.protocol import Substatus as SubStatus
from hypothesis import given
from hypothesis import strategies as st

from exthandler._fs import READ_LIMIT
from exthandler._report.status import read_heartbeat, read_status_file


def status_file(body: dict[str, Any] | None = None, **top: Any) -> bytes:
    entry: dict[str, Any] = {"version": 1.0, "timestampUTC": "2026-11-25T12:00:00Z", **top}
    entry["status"] = {"status": "success", **(body or {})}
    return json.dumps([entry]).encode()


def message(text: str) -> dict[str, str]:
    return {"lang": "en-US", "message": text}


def test_full_status_file() -> None:
    data = status_file(
        {
            "name": "customScript",
            "operation": "Enable",
            "configurationAppliedTime": "2026-11-25T11:59:00Z",
            "status": "success",
            "code": 0,
            "formattedMessage": message("done"),
            "substatus": [
                {
                    "name": "StdOut",
                    "status": "success",
                    "code": 0,
                    "formattedMessage": message("hi"),
                },
                {"name": "StdErr", "status": "Error", "code": "7", "formattedMessage": message("")},
            ],
            "extra": "ignored",
        },
        extra={"also": "ignored"},
    )
    assert parse_status(data) == StatusReport(
        name="customScript",
        operation="Enable",
        status=StatusLevel.SUCCESS,
        code=0,
        message="done",
        substatus=(
            SubStatus(name="StdOut", status=StatusLevel.SUCCESS, code=0, message="hi"),
            SubStatus(name="StdErr", status=StatusLevel.ERROR, code=7, message=""),
        ),
        timestamp="2026-11-25T12:00:00Z",
        configuration_applied_time="2026-11-25T11:59:00Z",
    )


def test_only_element_zero_counts_and_bom_is_tolerated() -> None:
    data = json.dumps(
        [{"status": {"status": "warning", "code": 3}}, {"status": {"status": "error"}}]
    ).encode()
    report = parse_status(b"\xef\xbb\xbf" + data)
    assert (report.status, report.code, report.invalid) == (StatusLevel.WARNING, 3, None)
    assert (report.name, report.operation, report.timestamp) == (None, None, None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "status file: not valid JSON"),
        (b"{not json", "status file: not valid JSON"),
        (b"\xff\xfe", "status file: not UTF-8"),
        (b'{"status": {"status": "success"}}', "status file: not a JSON array"),
        (b"[]", "status file: empty array"),
        (b"[1]", "status file: [0]: not an object"),
        (b'[{"version": 1}]', "status file: [0].status: missing"),
        (b'[{"status": null}]', "status file: [0].status: missing"),
        (b'[{"status": "success"}]', "status file: [0].status: not an object"),
        (b'[{"status": {"code": 0}}]', "status file: [0].status.status: missing"),
    ],
)
def test_unusable_files_are_error_1012(data: bytes, reason: str) -> None:
    report = parse_status(data)
    assert report.status is StatusLevel.ERROR
    assert report.code == 1012
    assert report.invalid is not None
    assert report.invalid.startswith(reason)
    assert report.message == report.invalid
    assert report.substatus == ()


def test_deeply_nested_json_is_invalid() -> None:
    report = parse_status(b"[" * 100_000 + b"]" * 100_000)
    assert report.invalid == "status file: not valid JSON (nested too deeply)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("success", StatusLevel.SUCCESS),
        ("SUCCESS", StatusLevel.SUCCESS),
        (" Transitioning ", StatusLevel.TRANSITIONING),
        ("Warning", StatusLevel.WARNING),
        ("error", StatusLevel.ERROR),
        ("succeeded", StatusLevel.ERROR),
        ("", StatusLevel.ERROR),
        (None, StatusLevel.ERROR),
        (1, StatusLevel.ERROR),
    ],
)
def test_status_values(value: object, expected: StatusLevel) -> None:
    report = parse_status(status_file({"status": value, "code": 5}))
    assert report.status is expected
    assert report.code == 5  # an unknown status keeps the extension's code
    assert report.invalid is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (12, 12),
        (-3, -3),
        ("42", 42),
        (" +7 ", 7),
        ("-1", -1),
        ("4_2", 0),
        ("abc", 0),
        ("", 0),
        ("9" * 5000, 0),
        (3.0, 3),
        (3.5, 0),
        (True, 0),
        ([1], 0),
        ({"a": 1}, 0),
    ],
)
def test_codes(value: object, expected: int) -> None:
    body: dict[str, Any] = {} if value is None else {"code": value}
    assert parse_status(status_file(body)).code == expected


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_codes_are_zero(raw: bytes) -> None:
    data = b'[{"status": {"status": "success", "code": ' + raw + b"}}]"
    assert parse_status(data).code == 0


@pytest.mark.parametrize(
    ("formatted", "expected"),
    [
        ({"lang": "en-US", "message": "ok"}, "ok"),
        ({"message": "no lang"}, ""),
        ({"lang": "en-US"}, ""),
        ({"lang": "en-US", "message": 5}, ""),
        ("just a string", ""),
        (None, ""),
    ],
)
def test_formatted_message(formatted: object, expected: str) -> None:
    assert parse_status(status_file({"formattedMessage": formatted})).message == expected


def test_bad_substatus_entries_are_skipped() -> None:
    entries = [
        None,
        "text",
        {"name": "NoStatus"},
        {"name": "Unknown", "status": "succeeded"},
        {"status": "transitioning"},
        {"name": 5, "status": "WARNING", "code": "x", "formattedMessage": {"message": "m"}},
        {"name": "Kept", "status": "error", "code": 2, "formattedMessage": message("bad")},
    ]
    report = parse_status(status_file({"substatus": entries}))
    assert report.substatus == (
        SubStatus(name="", status=StatusLevel.TRANSITIONING, code=0, message=""),
        SubStatus(name="", status=StatusLevel.WARNING, code=0, message=""),
        SubStatus(name="Kept", status=StatusLevel.ERROR, code=2, message="bad"),
    )


@pytest.mark.parametrize("substatus", [None, "x", {"status": "success"}])
def test_substatus_not_a_list_means_none(substatus: object) -> None:
    assert parse_status(status_file({"substatus": substatus})).substatus == ()


def test_lone_surrogates_are_replaced() -> None:
    data = b'[{"status": {"status": "success", "name": "a\\ud800b", '
    data += b'"formattedMessage": {"lang": "en", "message": "\\udfff"}}}]'
    report = parse_status(data)
    assert report.name == "a?b"
    assert report.message == "?"


def padded(body: dict[str, Any], size: int) -> bytes:
    """A status file of exactly `size` bytes (padding goes in an ignored key)."""
    data = status_file(body, padding="")
    missing = size - len(data)
    assert missing >= 0
    return status_file(body, padding="p" * missing)


def test_oversized_file_is_truncated() -> None:
    sub_text = "s" * (SUBSTATUS_FIELD_LIMIT + 1)
    body = {
        "formattedMessage": message("m" * 2048),
        "substatus": [
            {"name": sub_text, "status": "success", "formattedMessage": message(sub_text)},
            {"name": "short", "status": "success", "formattedMessage": message("fits")},
        ],
    }
    data = padded(body, STATUS_FILE_LIMIT + 1)
    assert len(data) == 128 * 1024 + 1
    report = parse_status(data)
    assert len(report.message) == MESSAGE_LIMIT == 1024
    assert report.message == "m" * (1024 - len(TRUNCATED_SUFFIX)) + " ... [TRUNCATED]"
    long, short = report.substatus
    assert len(long.name) == len(long.message) == SUBSTATUS_FIELD_LIMIT == 10 * 1024
    assert long.name.endswith(TRUNCATED_SUFFIX)
    assert long.message == "s" * (10 * 1024 - len(TRUNCATED_SUFFIX)) + TRUNCATED_SUFFIX
    assert (short.name, short.message) == ("short", "fits")


def test_file_at_the_limit_is_not_truncated() -> None:
    data = padded({"formattedMessage": message("m" * 2048)}, STATUS_FILE_LIMIT)
    assert parse_status(data).message == "m" * 2048


@pytest.mark.parametrize(("length", "cut"), [(1024, False), (1025, True)])
def test_message_limit_boundary(length: int, cut: bool) -> None:
    data = padded({"formattedMessage": message("m" * length)}, STATUS_FILE_LIMIT + 10)
    text = parse_status(data).message
    assert len(text) == min(length, MESSAGE_LIMIT)
    assert text.endswith(TRUNCATED_SUFFIX) is cut


def test_read_status_file(tmp_path: Path) -> None:
    path = tmp_path / "0.status"
    assert read_status_file(path) is None
    path.write_bytes(status_file({"status": "transitioning"}))
    report = read_status_file(path)
    assert report is not None
    assert report.status is StatusLevel.TRANSITIONING
    path.unlink()
    path.mkdir()
    unreadable = read_status_file(path)
    assert unreadable is not None
    assert unreadable.code == 1012
    assert unreadable.invalid is not None
    assert unreadable.invalid.startswith("status file: cannot be read")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "status",
                    "code",
                    "name",
                    "formattedMessage",
                    "lang",
                    "message",
                    "substatus",
                    "heartbeat",
                    "timestampUTC",
                    "operation",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@given(st.binary(max_size=512))
def test_parse_status_never_raises_on_bytes(data: bytes) -> None:
    assert isinstance(parse_status(data), StatusReport)


@given(json_values)
def test_parse_status_never_raises_on_json(document: object) -> None:
    report = parse_status(json.dumps(document).encode())
    assert isinstance(report, StatusReport)
    assert (report.invalid is None) or (report.code == 1012 and report.status is StatusLevel.ERROR)


@given(json_values)
def test_parse_status_never_raises_on_status_bodies(body: object) -> None:
    report = parse_status(json.dumps([{"status": body}]).encode())
    assert isinstance(report, StatusReport)


# -- heartbeat ----------------------------------------------------------------------------


def heartbeat_file(status: object = "Ready", **body: Any) -> bytes:
    return json.dumps([{"version": "1.0", "heartbeat": {"status": status, **body}}]).encode()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Ready", HeartbeatState.READY),
        ("ready", HeartbeatState.READY),
        ("NotReady", HeartbeatState.NOT_READY),
        (" NOTREADY ", HeartbeatState.NOT_READY),
    ],
)
def test_heartbeat_states(status: str, expected: HeartbeatState) -> None:
    data = heartbeat_file(status, code="3", formattedMessage=message("busy"))
    assert parse_heartbeat(data, age_seconds=1) == Heartbeat(state=expected, code=3, message="busy")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"nope", "heartbeat file: not valid JSON"),
        (b"{}", "heartbeat file: not a JSON array"),
        (b"[]", "heartbeat file: empty array"),
        (b"[[]]", "heartbeat file: [0]: not an object"),
        (b'[{"heartbeat": "Ready"}]', "heartbeat file: [0].heartbeat: missing or not an object"),
        (b'[{"heartbeat": {}}]', "heartbeat file: [0].heartbeat.status: missing"),
        (
            heartbeat_file("Busy"),
            "heartbeat file: [0].heartbeat.status: not Ready or NotReady ('Busy')",
        ),
        (
            heartbeat_file(1),
            "heartbeat file: [0].heartbeat.status: not Ready or NotReady (not a string)",
        ),
    ],
)
def test_unusable_heartbeat_is_unknown(data: bytes, reason: str) -> None:
    heartbeat = parse_heartbeat(data, age_seconds=0)
    assert heartbeat.state is HeartbeatState.UNKNOWN
    assert heartbeat.code == -1
    assert heartbeat.message.startswith(reason)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, HeartbeatState.READY),
        (HEARTBEAT_MAX_AGE, HeartbeatState.READY),
        (600.001, HeartbeatState.UNRESPONSIVE),
        (-5.0, HeartbeatState.READY),
    ],
)
def test_heartbeat_age(age: float, expected: HeartbeatState) -> None:
    assert parse_heartbeat(heartbeat_file(), age_seconds=age).state is expected


def test_stale_heartbeat_is_unresponsive_even_when_invalid() -> None:
    heartbeat = parse_heartbeat(b"garbage", age_seconds=601)
    assert heartbeat == Heartbeat(
        state=HeartbeatState.UNRESPONSIVE, code=-1, message="Extension heartbeat is not responsive"
    )


def test_read_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.log"
    assert read_heartbeat(path) is None
    path.write_bytes(heartbeat_file("NotReady"))
    os.utime(path, (1_000_000.0, 1_000_000.0))
    fresh = read_heartbeat(path, now=1_000_000.0 + 600)
    assert fresh is not None
    assert fresh.state is HeartbeatState.NOT_READY
    stale = read_heartbeat(path, now=1_000_000.0 + 601)
    assert stale is not None
    assert stale.state is HeartbeatState.UNRESPONSIVE
    current = read_heartbeat(path)  # against the real clock the file is decades old
    assert current is not None
    assert current.state is HeartbeatState.UNRESPONSIVE


def test_unreadable_heartbeat_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.log"
    path.mkdir()
    heartbeat = read_heartbeat(path, now=0)
    assert heartbeat is not None
    assert heartbeat.state is HeartbeatState.UNKNOWN
    assert heartbeat.message.startswith("heartbeat file: cannot be read")


@given(st.binary(max_size=512), st.floats(allow_nan=False))
def test_parse_heartbeat_never_raises_on_bytes(data: bytes, age: float) -> None:
    assert isinstance(parse_heartbeat(data, age_seconds=age), Heartbeat)


@given(json_values)
def test_parse_heartbeat_never_raises_on_json(body: object) -> None:
    for document in (body, [{"heartbeat": body}]):
        heartbeat = parse_heartbeat(json.dumps(document).encode(), age_seconds=0)
        assert isinstance(heartbeat, Heartbeat)


# -- what a handler may plant instead of its status file or heartbeat ------------------------


def _plant(path: Path, kind: str, tmp_path: Path) -> None:
    """Put a FIFO, a link to a valid file outside, or a sparse huge file at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        outside = tmp_path / "outside.json"
        outside.write_bytes(
            heartbeat_file("Ready") if path.name == "heartbeat.log" else status_file()
        )
        path.symlink_to(outside)
    else:
        with path.open("wb") as file:
            file.truncate(1 << 30)  # 1 GiB, sparse: costs no disk


PLANTED_REASONS = {
    "fifo": "cannot be read (a FIFO, not a regular file)",
    "link": "cannot be read (a symbolic link, not followed)",
    "huge": f"larger than {READ_LIMIT} bytes",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(PLANTED_REASONS))
def test_a_planted_status_file_is_error_1012_unread(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "0.status"
    _plant(path, kind, tmp_path)
    report = read_status_file(path)
    assert report is not None
    assert (report.status, report.code) == (StatusLevel.ERROR, 1012)
    assert report.invalid == f"status file: {PLANTED_REASONS[kind]}"


def test_a_status_file_over_the_read_limit_is_1012_and_one_under_it_is_cut(
    tmp_path: Path,
) -> None:
    path = tmp_path / "0.status"
    path.write_bytes(padded({"formattedMessage": message("m" * 2048)}, READ_LIMIT))
    report = read_status_file(path)
    assert report is not None
    assert report.status is StatusLevel.SUCCESS
    assert report.message.endswith(TRUNCATED_SUFFIX)  # over 128 KiB: its texts are cut
    path.write_bytes(padded({"formattedMessage": message("m" * 2048)}, READ_LIMIT + 1))
    report = read_status_file(path)
    assert report is not None
    assert report.invalid == f"status file: larger than {READ_LIMIT} bytes"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(PLANTED_REASONS))
def test_a_planted_heartbeat_is_unknown_unread(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "heartbeat.log"
    _plant(path, kind, tmp_path)
    heartbeat = read_heartbeat(path, now=time.time())
    assert heartbeat is not None
    assert heartbeat.state is HeartbeatState.UNKNOWN
    assert heartbeat.message == f"heartbeat file: {PLANTED_REASONS[kind]}"
