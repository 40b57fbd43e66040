"""HandlerManifest.json parsing with the reference agent's quirks (docs/protocol.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from exthandler_sdk import ErrorCode, Operation

from exthandler import PackageError, parse_manifest
from exthandler._fs import READ_LIMIT
from exthandler._packages.manifest import read_manifest

COMMANDS = {
    "installCommand": "bin/install.sh",
    "enableCommand": "bin/enable.sh",
    "disableCommand": "bin/disable.sh",
    "uninstallCommand": "bin/uninstall.sh",
    "updateCommand": "bin/update.sh",
}


def manifest(**body: Any) -> bytes:
    return json.dumps(
        [{"name": "X", "version": 1.0, "handlerManifest": {**COMMANDS, **body}}]
    ).encode()


def test_full_manifest() -> None:
    parsed = parse_manifest(
        json.dumps(
            [
                {
                    "name": "CustomScript",
                    "version": 1.0,
                    "handlerManifest": {
                        **COMMANDS,
                        "rebootAfterInstall": False,
                        "reportHeartbeat": "TRUE",
                        "updateMode": "UpdateWithoutInstall",
                        "continueOnUpdateFailure": "true",
                        "supportsMultipleExtensions": True,
                    },
                    "resourceLimits": {"cpuQuotaPercentage": 50, "memoryQuotaInMB": 256},
                },
                {"ignored": True},
            ]
        ).encode()
    )
    assert parsed.name == "CustomScript"
    assert parsed.version == "1.0"
    assert parsed.command(Operation.ENABLE) == "bin/enable.sh"
    assert parsed.report_heartbeat
    assert not parsed.reboot_after_install
    assert not parsed.update_with_install
    assert parsed.continue_on_update_failure
    assert parsed.supports_multiple_extensions
    assert parsed.resource_limits.cpu_quota_percentage == 50
    assert parsed.resource_limits.memory_quota_mb == 256


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("true", True),
        ("True", True),
        (" TRUE ", True),
        (False, False),
        ("false", False),
        ("yes", False),
        (1, False),
        (None, False),
        ({}, False),
    ],
)
def test_boolean_coercion(value: object, expected: bool) -> None:
    assert parse_manifest(manifest(reportHeartbeat=value)).report_heartbeat is expected


@pytest.mark.parametrize(
    ("mode", "with_install"),
    [
        (None, True),
        ("", True),
        ("UpdateWithInstall", True),
        ("updatewithinstall", True),
        ("UpdateWithoutInstall", False),
        ("SomethingElse", False),
    ],
)
def test_update_mode(mode: str | None, with_install: bool) -> None:
    body = {} if mode is None else {"updateMode": mode}
    assert parse_manifest(manifest(**body)).update_with_install is with_install


def test_bom_and_bare_object_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + json.dumps({"handlerManifest": COMMANDS}).encode()
    parsed = parse_manifest(data)
    assert parsed.command(Operation.UNINSTALL) == "bin/uninstall.sh"
    assert parsed.name is None
    assert parsed.resource_limits.cpu_quota_percentage is None


def test_update_command_is_optional() -> None:
    body = {k: v for k, v in COMMANDS.items() if k != "updateCommand"}
    data = json.dumps([{"handlerManifest": body}]).encode()
    assert parse_manifest(data).command(Operation.UPDATE) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON array"),
        (b"[1]", "must be a JSON array"),
        (b'"x"', "must be a JSON array"),
        (b'[{"name": "x"}]', "[0].handlerManifest: missing or not an object"),
        (
            json.dumps([{"handlerManifest": {"installCommand": "i"}}]).encode(),
            "[0].handlerManifest.enableCommand: missing or not a command",
        ),
        (manifest(updateCommand=5), "[0].handlerManifest.updateCommand: missing"),
        (manifest(enableCommand="  "), "[0].handlerManifest.enableCommand: missing"),
    ],
)
def test_unparsable_manifest_is_1003(data: bytes, reason: str) -> None:
    with pytest.raises(PackageError) as info:
        parse_manifest(data, where="pkg/HandlerManifest.json")
    assert info.value.code == ErrorCode.MANIFEST_UNPARSABLE
    assert str(info.value).startswith("pkg/HandlerManifest.json: ")
    assert reason in str(info.value)


def test_missing_commands_are_all_listed() -> None:
    with pytest.raises(PackageError) as info:
        parse_manifest(json.dumps([{"handlerManifest": {}}]).encode())
    for key in ("installCommand", "enableCommand", "disableCommand", "uninstallCommand"):
        assert key in str(info.value)


def test_negative_or_bogus_limits_are_ignored() -> None:
    data = json.dumps(
        [
            {
                "handlerManifest": COMMANDS,
                "resourceLimits": {"cpuQuotaPercentage": -5, "memoryQuotaInMB": True},
            }
        ]
    )
    limits = parse_manifest(data.encode()).resource_limits
    assert (limits.cpu_quota_percentage, limits.memory_quota_mb) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("pkg.mod:Class", "pkg.mod:Class"), ("", None), (7, None), (None, None)],
)
def test_the_in_process_key_names_a_class_only_as_a_string(
    value: object, expected: str | None
) -> None:
    entry: dict[str, object] = {
        "handlerManifest": {
            "installCommand": "i",
            "enableCommand": "e",
            "disableCommand": "d",
            "uninstallCommand": "u",
        }
    }
    if value is not None:
        entry["exthandlerInProcess"] = value
    assert parse_manifest(json.dumps([entry]).encode()).in_process == expected


# -- HandlerManifest.json read back from a handler dir the handler can write to -------------


def test_read_manifest_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "HandlerManifest.json"
    path.write_bytes(manifest(reportHeartbeat=True))
    assert read_manifest(path).report_heartbeat


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("missing", ErrorCode.MANIFEST_NOT_FOUND, "missing"),
        ("fifo", ErrorCode.MANIFEST_NOT_FOUND, "a FIFO, not a regular file"),
        ("link", ErrorCode.MANIFEST_NOT_FOUND, "a symbolic link, not followed"),
        ("huge", ErrorCode.MANIFEST_UNPARSABLE, f"larger than {READ_LIMIT} bytes"),
        ("garbage", ErrorCode.MANIFEST_UNPARSABLE, "not valid JSON"),
    ],
)
def test_read_manifest_refuses_what_a_handler_planted(
    tmp_path: Path, kind: str, code: ErrorCode, reason: str
) -> None:
    path = tmp_path / "HandlerManifest.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        outside = tmp_path / "outside.json"
        outside.write_bytes(manifest())
        path.symlink_to(outside)
    elif kind == "huge":
        with path.open("wb") as file:
            file.truncate(1 << 30)  # sparse: costs no disk
    elif kind == "garbage":
        path.write_bytes(b"{")
    with pytest.raises(PackageError) as info:
        read_manifest(path)
    assert info.value.code == code
    assert str(info.value).startswith(f"{path}: ")
    assert reason in str(info.value)
