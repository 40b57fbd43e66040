"""Status, heartbeat, events, settings and environment files: formats and limits."""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
from exthandler_sdk import Operation, StatusLevel, Substatus
from exthandler_sdk._environment import (
    HandlerEnvironmentError,
    load_handler_environment,
    read_protocol_variables,
    write_atomic,
)
from exthandler_sdk._events import Events
from exthandler_sdk._heartbeat import Heartbeat, HeartbeatDisabledError
from exthandler_sdk._logging import close_logger, make_logger
from exthandler_sdk._settings import (
    RawSettings,
    SettingsError,
    load_settings,
    make_converter,
    read_settings_file,
)
from exthandler_sdk._status import StatusWriteError, StatusWriter
from exthandler_sdk.protocol import EVENT_MAX_SIZE, parse_status, render_status, truncate_tail
from exthandler_sdk.protocol import STATUS_FILE_LIMIT as FILE_LIMIT

NOW = "2026-11-25T12:00:00Z"


def render(message: str, substatus: list[Substatus]) -> bytes:
    return render_status(
        name="ext",
        operation=Operation.ENABLE,
        status=StatusLevel.ERROR,
        code=5,
        message=message,
        substatus=substatus,
        timestamp=NOW,
        applied_time=NOW,
    )


def test_truncate_tail() -> None:
    assert truncate_tail("abc", 3) == "abc"
    cut = truncate_tail("x" * 100 + "END", 50)
    assert (len(cut), cut[:16], cut[-3:]) == (50, "[TRUNCATED] ... ", "END")
    assert truncate_tail("abcdef", 4) == "[TRUNCATED] ... "


def test_huge_status_keeps_tails_under_the_limit() -> None:
    message = "start " + "m" * 200_000 + " the reason"
    entries = [
        Substatus(name=f"n{i}" + "N" * 20_000, message="s" * 50_000 + f" tail{i}") for i in range(3)
    ]
    data = render(message, entries)
    assert len(data) <= FILE_LIMIT
    body = json.loads(data)[0]["status"]
    text = body["formattedMessage"]["message"]
    assert len(text) == 1024
    assert text.endswith(" the reason")
    assert [
        s["formattedMessage"]["message"].endswith(f" tail{i}")
        for i, s in enumerate(body["substatus"])
    ] == [True] * 3
    assert all(len(s["name"]) <= 10 * 1024 for s in body["substatus"])
    report = parse_status(data)  # what the runtime reads: nothing more to cut
    assert report.message == text
    assert report.code == 5


def test_many_substatus_drop_the_oldest() -> None:
    entries = [Substatus(name=f"s{i}", message="é" * 2000) for i in range(2000)]
    data = render("m", entries)
    assert len(data) <= FILE_LIMIT
    names = [s["name"] for s in json.loads(data)[0]["status"]["substatus"]]
    assert names[-1] == "s1999"
    assert "s0" not in names


def test_small_status_is_not_cut() -> None:
    entry = Substatus(name="StdOut", message="x" * 9000, status=StatusLevel.WARNING, code=1)
    body = json.loads(render("y" * 1000, [entry]))[0]["status"]
    assert body["formattedMessage"]["message"] == "y" * 1000
    assert body["substatus"][0]["formattedMessage"]["message"] == "x" * 9000


@pytest.mark.anyio
async def test_status_writer(tmp_path: Path) -> None:
    clock = iter(datetime.datetime(2026, 1, 1, 0, 0, s, tzinfo=datetime.UTC) for s in range(60))
    writer = StatusWriter(
        tmp_path / "0.status", "ext", Operation.DISABLE, clock=lambda: next(clock)
    )
    assert not writer.refresh()
    await writer.transitioning("working")
    assert json.loads((tmp_path / "0.status").read_bytes())[0]["timestampUTC"] == (
        "2026-01-01T00:00:00Z"
    )
    assert (
        "configurationAppliedTime"
        not in json.loads((tmp_path / "0.status").read_bytes())[0]["status"]
    )
    assert writer.refresh()
    assert json.loads((tmp_path / "0.status").read_bytes())[0]["timestampUTC"] == (
        "2026-01-01T00:00:01Z"
    )
    writer.substatus("a", "warning", "first")
    writer.substatus("a", StatusLevel.SUCCESS, "second")
    await writer.success("ok", 0)
    assert writer.written_terminal
    assert not writer.refresh()
    body = json.loads((tmp_path / "0.status").read_bytes())[0]["status"]
    assert body["operation"] == "Disable"
    assert body["configurationAppliedTime"] == "2026-01-01T00:00:02Z"
    assert [s["formattedMessage"]["message"] for s in body["substatus"]] == ["second"]
    writer.freeze()
    await writer.error("ignored", 9)
    assert json.loads((tmp_path / "0.status").read_bytes())[0]["status"]["status"] == "success"


@pytest.mark.anyio
async def test_status_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    writer = StatusWriter(tmp_path / "file" / "0.status", "ext", Operation.ENABLE)
    with pytest.raises(StatusWriteError):
        await writer.transitioning("x")


@pytest.mark.anyio
async def test_heartbeat_disabled(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path / "heartbeat.log", enabled=False)
    with pytest.raises(HeartbeatDisabledError):
        await beat.ready()
    beat = Heartbeat(tmp_path / "heartbeat.log", enabled=True)
    await beat.ready("fine")
    assert json.loads((tmp_path / "heartbeat.log").read_bytes()) == [
        {
            "version": "1.0",
            "heartbeat": {
                "status": "Ready",
                "code": 0,
                "formattedMessage": {"lang": "en-US", "message": "fine"},
            },
        }
    ]


def _glob(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def _events(folder: Path | None, **kwargs: Any) -> Events:
    return Events(folder, "1.0", "op", logging.Logger("test-events"), **kwargs)


@pytest.mark.anyio
async def test_events_rate_limit(tmp_path: Path) -> None:
    now = [0.0]
    events = _events(tmp_path, limit=3, window=300.0, clock=lambda: now[0])
    assert [await events.info(str(i)) for i in range(5)] == [True, True, True, False, False]
    assert events.dropped == 2
    now[0] = 301.0
    assert await events.info("later")
    assert len(_glob(tmp_path, "*.json")) == 4
    assert not _glob(tmp_path, "*.tmp")


@pytest.mark.anyio
async def test_events_size_limit(tmp_path: Path) -> None:
    events = _events(tmp_path)
    assert await events.info("\u2603" * 3000)  # six characters of JSON each
    (path,) = _glob(tmp_path, "*.json")
    data = path.read_text()
    assert len(data) <= EVENT_MAX_SIZE
    assert json.loads(data)["Message"].startswith("\u2603")
    assert not await events.info("m", task_name="t" * 7000)
    assert events.dropped == 1


@pytest.mark.anyio
async def test_events_names_are_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time_ns", lambda: 1000)
    events = _events(tmp_path)
    (tmp_path / "1001.json").write_text("{}")
    for message in ("a", "b", "c"):
        assert await events.info(message)
    names = sorted(int(p.stem) for p in _glob(tmp_path, "*.json"))
    assert names == [1000, 1001, 1002, 1003]


@pytest.mark.anyio
async def test_events_without_folder() -> None:
    assert not await _events(None).warning("nowhere")


def test_logger_rotates_and_keeps_its_backups(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    (folder).mkdir()
    (folder / "x.log").write_text("y" * 90 + "\n")  # left by an earlier operation
    logger = make_logger(folder, "x.log", name="t", max_bytes=100, backups=2)
    for index in range(12):
        logger.info("record %02d", index)
    close_logger(logger)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["x.log", "x.log.1", "x.log.2"]
    text = {name: (folder / name).read_text() for name in names}
    assert all(len(t.encode()) <= 100 for t in text.values())
    assert "record 11" in text["x.log"]
    assert "yyy" not in "".join(text.values())  # the oldest file fell off the end
    ordered = text["x.log.2"] + text["x.log.1"] + text["x.log"]
    numbers = [int(line.rsplit(" ", 1)[1]) for line in ordered.splitlines()]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 11


def test_logger_without_backups_truncates(tmp_path: Path) -> None:
    logger = make_logger(tmp_path, "x.log", name="t", max_bytes=60, backups=0)
    for index in range(5):
        logger.info("record %d", index)
    close_logger(logger)
    assert [p.name for p in tmp_path.iterdir()] == ["x.log"]
    assert "record 4" in (tmp_path / "x.log").read_text()


def test_logger_without_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    logger = make_logger(tmp_path / "file" / "sub", "x.log", name="t")
    logger.info("dropped")
    close_logger(logger)
    assert logger.handlers == []


@attrs.frozen
class Nested:
    flag: bool
    ratio: float = 1.0


@attrs.frozen
class Public:
    nested: Nested
    items: list[int] = attrs.field(factory=list)


def test_converter_is_strict_about_primitives() -> None:
    converter = make_converter()
    assert converter.structure({"flag": "TRUE", "ratio": "2.5"}, Nested) == Nested(True, 2.5)
    assert converter.structure({"flag": False, "ratio": 3}, Nested) == Nested(False, 3.0)
    assert converter.structure(4.0, int) == 4
    for value, kind in [
        ("false", int),
        (1.5, int),
        (True, int),
        (5, str),
        (1, bool),
        ("x", float),
        (True, float),
    ]:
        with pytest.raises(ValueError, match="expected"):
            converter.structure(value, kind)


def test_every_bad_field_by_path() -> None:
    raw = RawSettings(public={"nested": {"flag": "maybe", "ratio": []}, "items": [1, "x"]})
    with pytest.raises(SettingsError) as caught:
        load_settings(raw, Public, None, lib_dir=Path("/nonexistent"))
    assert caught.value.errors == (
        "settings.nested.flag: invalid value for type, expected bool",
        "settings.nested.ratio: invalid value for type, expected float",
        "settings.items[1]: invalid value for type, expected int",
    )


def test_public_settings_must_be_an_object() -> None:
    with pytest.raises(SettingsError, match="settings: expected a JSON object, got array"):
        load_settings(RawSettings(public=[1]), Public, None, lib_dir=Path("/"))


def test_protected_errors(tmp_path: Path) -> None:
    raw = RawSettings(public={}, protected="AAAA", thumbprint=None)
    with pytest.raises(SettingsError) as caught:
        load_settings(raw, Public, Nested, lib_dir=tmp_path)
    assert caught.value.errors == (
        "settings.nested: required field missing",
        "protectedSettings: no protectedSettingsCertThumbprint given",
    )
    raw = RawSettings(protected="AAAA", thumbprint="B" * 40)
    with pytest.raises(SettingsError, match="protectedSettings: no certificate"):
        load_settings(raw, None, Nested, lib_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", RawSettings()),
        ("  \n", RawSettings()),
        ('{"runtimeSettings": []}', RawSettings()),
        ('{"other": 1}', RawSettings()),
        (
            '\ufeff{"runtimeSettings": [{"handlerSettings": {"publicSettings": "{\\"a\\": 1}",'
            ' "protectedSettings": " ", "protectedSettingsCertThumbprint": 5}}]}',
            RawSettings(public={"a": 1}),
        ),
        (
            '{"runtimeSettings": [{"handlerSettings": {"publicSettings": "",'
            ' "protectedSettings": "QQ==", "protectedSettingsCertThumbprint": "AB"}}]}',
            RawSettings(public=None, protected="QQ==", thumbprint="AB"),
        ),
    ],
)
def test_read_settings_file(tmp_path: Path, text: str, expected: RawSettings) -> None:
    path = tmp_path / "0.settings"
    path.write_text(text, encoding="utf-8")
    assert read_settings_file(path) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"runtimeSettings": [1]}', "handlerSettings: not an object"),
        ('{"runtimeSettings": [{"handlerSettings": {"publicSettings": "{"}}]}', "not a JSON"),
    ],
)
def test_bad_settings_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "0.settings"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        read_settings_file(path)


def test_missing_and_unreadable_settings_file(tmp_path: Path) -> None:
    assert read_settings_file(tmp_path / "none.settings") == RawSettings()
    (tmp_path / "dir.settings").mkdir()
    with pytest.raises(SettingsError, match="cannot be read"):
        read_settings_file(tmp_path / "dir.settings")


def _environment(tmp_path: Path, document: object) -> Path:
    (tmp_path / "HandlerEnvironment.json").write_text(json.dumps(document))
    return tmp_path


def test_handler_environment_relative_and_optional(tmp_path: Path) -> None:
    body = {"logFolder": "log", "configFolder": "config", "statusFolder": "/abs/status"}
    environment = load_handler_environment(
        _environment(tmp_path, {"name": 5, "handlerEnvironment": body})
    )
    assert environment.name is None
    assert environment.log_folder == tmp_path / "log"
    assert environment.status_folder == Path("/abs/status")
    assert environment.heartbeat_file == tmp_path / "heartbeat.log"
    assert environment.events_folder is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "no handlerEnvironment"),
        ([{"handlerEnvironment": {"logFolder": "l", "configFolder": "c"}}], "statusFolder"),
    ],
)
def test_bad_handler_environment(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(HandlerEnvironmentError, match=message):
        load_handler_environment(_environment(tmp_path, document))


def test_unparsable_handler_environment(tmp_path: Path) -> None:
    (tmp_path / "HandlerEnvironment.json").write_text("[")
    with pytest.raises(HandlerEnvironmentError, match="not UTF-8 JSON"):
        load_handler_environment(tmp_path)


def test_protocol_variables() -> None:
    variables = read_protocol_variables(
        {
            "ConfigSequenceNumber": " 7 ",
            "ConfigExtensionName": "",
            "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE": "not_run",
            "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "-3",
            "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS": json.dumps(
                [
                    {"extensionName": "a", "exitCode": 2},
                    {"extensionName": "b", "exitCode": True},
                    "junk",
                    {"exitCode": "1"},
                ]
            ),
        }
    )
    assert variables.sequence_number == 7
    assert variables.extension_name is None
    assert variables.disable_exit_code is None
    assert variables.uninstall_exit_code == -3
    assert variables.disable_exit_codes == {"a": 2, "b": None}
    bad_json = read_protocol_variables(
        {"AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS": "{"}
    )
    assert bad_json.disable_exit_codes == {}
    assert read_protocol_variables({"ConfigSequenceNumber": ""}).sequence_number is None
    with pytest.raises(HandlerEnvironmentError):
        read_protocol_variables({"ConfigSequenceNumber": "-1"})


def test_write_atomic_cleans_up(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"1", mode=0o600)
    assert (tmp_path / "a").read_bytes() == b"1"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    with pytest.raises(OSError, match=r"Directory not empty|Is a directory"):
        write_atomic(tmp_path / "d", b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d"]


def test_write_atomic_gives_the_file_its_owner_before_it_appears(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    directory = tmp_path / "home"
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic("keys", b"k\n", mode=0o600, dir_fd=fd, owner=(4321, 4322))
    finally:
        os.close(fd)
    info = (directory / "keys").stat()
    assert (info.st_uid, info.st_gid) == (4321, 4322)
    assert info.st_mode & 0o7777 == 0o600
    assert (directory / "keys").read_bytes() == b"k\n"
    assert [p.name for p in directory.iterdir()] == ["keys"]
