"""Telemetry event collection with the reference agent's limits (docs/protocol.md)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from exthandler_sdk.protocol import EVENT_FILE_MAX_SIZE as FILE_MAX_SIZE
from exthandler_sdk.protocol import EVENT_MAX_SIZE, TelemetryEvent, event_size
from exthandler_sdk.protocol import EVENT_MESSAGE_MAX_LENGTH as MESSAGE_MAX_LENGTH
from hypothesis import given
from hypothesis import strategies as st

from exthandler._report.telemetry import EventRateLimiter, collect_events

HANDLER = "Microsoft.Azure.Extensions.CustomScript"


@attrs.define(eq=False)
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def raw_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "Version": "2.1.3",
        "Timestamp": "2026-11-25T12:00:00Z",
        "TaskName": "Enable",
        "EventLevel": "Informational",
        "Message": "hello",
        "EventPid": "42",
        "EventTid": "7",
        "OperationId": "op-1",
    }
    event.update(overrides)
    return event


def write(events_dir: Path, name: str, content: Any) -> Path:
    path = events_dir / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    path = tmp_path / "events"
    path.mkdir()
    return path


def collect(
    events_dir: Path, limiter: EventRateLimiter | None = None
) -> tuple[list[TelemetryEvent], list[str]]:
    return collect_events(events_dir, handler=HANDLER, limiter=limiter or EventRateLimiter())


def test_single_event_and_array(events_dir: Path) -> None:
    write(events_dir, "1.json", raw_event())
    write(events_dir, "2.json", [raw_event(Message="a"), raw_event(Message="b")])
    events, problems = collect(events_dir)
    assert problems == []
    assert events[0] == TelemetryEvent(
        handler=HANDLER,
        version="2.1.3",
        timestamp="2026-11-25T12:00:00Z",
        task_name="Enable",
        event_level="Informational",
        message="hello",
        event_pid="42",
        event_tid="7",
        operation_id="op-1",
    )
    assert [event.message for event in events] == ["hello", "a", "b"]
    assert list(events_dir.iterdir()) == []


def test_keys_are_case_insensitive_and_values_become_text(events_dir: Path) -> None:
    raw = {key.lower(): value for key, value in raw_event().items()}
    raw.update({"eventpid": 42, "EVENTTID": None, "version": 1.5, "extra": "ignored"})
    write(events_dir, "5.json", raw)
    (event,), problems = collect(events_dir)
    assert problems == []
    assert (event.event_pid, event.event_tid, event.version) == ("42", "", "1.5")
    assert event.to_json()["EventPid"] == "42"


def test_bom_and_non_string_values(events_dir: Path) -> None:
    write(
        events_dir,
        "1.json",
        b"\xef\xbb\xbf" + json.dumps(raw_event(Message={"a": [1, True]})).encode(),
    )
    (event,), _ = collect(events_dir)
    assert event.message == '{"a": [1, true]}'


def test_files_in_numeric_order_and_others_untouched(events_dir: Path) -> None:
    for name in ["10.json", "9.json", "010.json", "100.json"]:
        write(events_dir, name, raw_event(Message=name))
    for name in ["a.json", "1.json.tmp", "12.txt", ".1.json", "1.JSON", "x1.json"]:
        write(events_dir, name, raw_event())
    (events_dir / "77.json").mkdir()
    events, problems = collect(events_dir)
    assert problems == []
    assert [event.message for event in events] == ["9.json", "010.json", "10.json", "100.json"]
    assert sorted(path.name for path in events_dir.iterdir()) == sorted(
        ["a.json", "1.json.tmp", "12.txt", ".1.json", "1.JSON", "x1.json", "77.json"]
    )


def test_missing_folder_holds_no_events(tmp_path: Path) -> None:
    assert collect(tmp_path / "absent") == ([], [])
    (tmp_path / "file").write_text("")
    assert collect(tmp_path / "file") == ([], [])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{broken", "not valid JSON (JSONDecodeError)"),
        (b"\xff", "not valid JSON (UnicodeDecodeError)"),
        (b"[" * 100_000, "not valid JSON (RecursionError)"),
        (b"5", "neither an event object nor an array of them"),
    ],
    ids=["json", "utf8", "nested", "scalar"],
)
def test_unparsable_files_are_deleted(events_dir: Path, content: bytes, problem: str) -> None:
    path = write(events_dir, "1.json", content)
    events, problems = collect(events_dir)
    assert events == []
    assert problems == [f"{path}: {problem}"]
    assert not path.exists()


def test_bad_events_are_dropped_and_the_rest_kept(events_dir: Path) -> None:
    incomplete = raw_event()
    del incomplete["OperationId"]
    del incomplete["TaskName"]
    path = write(events_dir, "1.json", [raw_event(Message="kept"), 3, incomplete])
    events, problems = collect(events_dir)
    assert [event.message for event in events] == ["kept"]
    assert problems == [
        f"{path}: [1]: not an object; dropped",
        f"{path}: [2]: missing TaskName, OperationId; dropped",
    ]


@pytest.mark.parametrize(("size", "kept"), [(FILE_MAX_SIZE, True), (FILE_MAX_SIZE + 1, False)])
def test_file_size_limit(events_dir: Path, size: int, kept: bool) -> None:
    content = json.dumps(raw_event()).encode()
    path = write(events_dir, "1.json", content + b" " * (size - len(content)))
    assert path.stat().st_size == size
    events, problems = collect(events_dir)
    assert len(events) == int(kept)
    if not kept:
        assert problems == [f"{path}: larger than the limit of 4194304 bytes; deleted"]
    assert not path.exists()


@pytest.mark.parametrize(("length", "kept"), [(3072, 3072), (3073, 3072), (10, 10)])
def test_message_is_cut(events_dir: Path, length: int, kept: int) -> None:
    write(events_dir, "1.json", raw_event(Message="m" * length))
    (event,), problems = collect(events_dir)
    assert event.message == "m" * kept
    assert MESSAGE_MAX_LENGTH == 3072
    assert problems == []


def test_event_size_limit(events_dir: Path) -> None:
    base = event_size(TelemetryEvent(**{**_fields(raw_event()), "task_name": ""}))
    fits = "t" * (EVENT_MAX_SIZE - base)
    write(events_dir, "1.json", raw_event(TaskName=fits))
    path = write(events_dir, "2.json", raw_event(TaskName=fits + "t"))
    events, problems = collect(events_dir)
    assert [event_size(event) for event in events] == [6 * 1024]
    assert problems == [f"{path}: [0]: 6145 bytes, over the limit of 6144; dropped"]


def test_size_is_measured_after_the_message_cut(events_dir: Path) -> None:
    write(events_dir, "1.json", raw_event(Message="m" * 5000))
    (event,), _ = collect(events_dir)
    assert len(event.message) == 3072


def test_non_ascii_message_counts_escaped(events_dir: Path) -> None:
    write(events_dir, "1.json", raw_event(Message="\u00e9" * 3072))  # 6 characters each as JSON
    events, problems = collect(events_dir)
    assert events == []
    assert len(problems) == 1


def _fields(raw: dict[str, Any]) -> dict[str, str]:
    return {
        "handler": HANDLER,
        "version": raw["Version"],
        "timestamp": raw["Timestamp"],
        "task_name": raw["TaskName"],
        "event_level": raw["EventLevel"],
        "message": raw["Message"],
        "event_pid": raw["EventPid"],
        "event_tid": raw["EventTid"],
        "operation_id": raw["OperationId"],
    }


def test_rate_limit_across_files_and_windows(events_dir: Path) -> None:
    clock = FakeClock()
    limiter = EventRateLimiter(clock=clock)
    write(events_dir, "1.json", [raw_event()] * 300)
    path = write(events_dir, "2.json", [raw_event()] * 100)
    events, problems = collect(events_dir, limiter)
    assert len(events) == 360
    assert problems == [
        f"{path}: 40 events dropped: over the limit of 360 events per 300 s for {HANDLER}"
    ]
    assert list(events_dir.iterdir()) == []

    clock.now += 299.0
    write(events_dir, "3.json", raw_event())
    events, problems = collect(events_dir, limiter)
    assert events == []
    assert len(problems) == 1

    clock.now += 1.0  # the first 360 leave the window
    write(events_dir, "4.json", raw_event())
    events, problems = collect(events_dir, limiter)
    assert (len(events), problems) == (1, [])


def test_rate_limiter_is_per_key_and_sliding() -> None:
    clock = FakeClock(now=0.0)
    limiter = EventRateLimiter(limit=10, window=60.0, clock=clock)
    assert limiter.admit("a", 6) == 6
    clock.now = 30.0
    assert limiter.admit("a", 6) == 4
    assert limiter.admit("b", 10) == 10
    assert limiter.admit("a", 1) == 0
    clock.now = 60.0  # the 6 admitted at 0 expire, the 4 at 30 remain
    assert limiter.admit("a", 10) == 6
    assert limiter.admit("a", 0) == 0
    clock.now = 1000.0
    assert limiter.admit("c", 0) == 0
    assert limiter.admit("a", 3) == 3


def test_symbolic_link_is_deleted_unread(events_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(raw_event(Message="secret")))
    link = events_dir / "1.json"
    link.symlink_to(secret)
    events, problems = collect(events_dir)
    assert events == []
    assert problems == [f"{link}: a symbolic link, not read; deleted"]
    assert not link.is_symlink()
    assert secret.exists()


def test_fifo_is_deleted_unread(events_dir: Path) -> None:
    path = events_dir / "1.json"
    os.mkfifo(path)
    events, problems = collect(events_dir)
    assert (events, problems) == ([], [f"{path}: not a regular file; deleted"])
    assert not path.exists()


def test_unreadable_and_undeletable_files(
    events_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: the tests may run as root, for whom permissions do not apply.
    unreadable = write(events_dir, "1.json", raw_event())
    vanishing = write(events_dir, "2.json", raw_event(Message="read"))
    real_open, real_unlink = os.open, os.unlink

    # Event files are opened and deleted by name in the open events dir.
    def fake_open(path: Any, flags: int, *args: Any, **where: Any) -> int:
        if path == unreadable.name:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **where)

    def fake_unlink(path: Any, **where: Any) -> None:
        if path == unreadable.name:
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, **where)
        if path == vanishing.name:  # someone else deleted it first
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "unlink", fake_unlink)
    events, problems = collect(events_dir)
    assert [event.message for event in events] == ["read"]
    assert problems == [
        f"{unreadable}: cannot be read (Permission denied); deleted",
        f"{unreadable}: cannot be deleted (Permission denied)",
    ]
    assert not vanishing.exists()


@given(st.binary(max_size=256))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "1.json").write_bytes(data)
        events, _ = collect_events(folder, handler=HANDLER, limiter=EventRateLimiter())
        assert all(isinstance(event, TelemetryEvent) for event in events)
        assert list(folder.iterdir()) == []


def test_a_linked_events_dir_is_left_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kept = write(elsewhere, "1.json", raw_event(Message="not the extension's"))
    events_dir = tmp_path / "events"
    events_dir.symlink_to(elsewhere)
    events, problems = collect(events_dir)
    assert events == []
    assert problems == [f"{events_dir}: a symbolic link, not followed; no events collected"]
    assert kept.exists()


@pytest.mark.timeout(60)
def test_a_huge_sparse_event_file_is_deleted_unread(events_dir: Path) -> None:
    path = events_dir / "1.json"
    with path.open("wb") as file:
        file.truncate(1 << 30)  # sparse: costs no disk
    later = write(events_dir, "2.json", raw_event(Message="later"))
    events, problems = collect(events_dir)
    assert [event.message for event in events] == ["later"]
    assert problems == [f"{path}: larger than the limit of 4194304 bytes; deleted"]
    assert not path.exists()
    assert not later.exists()
