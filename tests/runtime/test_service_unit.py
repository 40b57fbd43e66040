"""The systemd unit shipped in the package, and the notify protocol's details."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from exthandler._cli.main import main
from exthandler._service.notify import Notifier, watchdog_interval


def _unit() -> str:
    return (resources.files("exthandler") / "data" / "exthandler.service").read_text()


def _settings(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] not in "#;"
    )


def test_the_unit_is_a_notify_service_with_a_watchdog() -> None:
    settings = _settings(_unit())
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["Restart"] == "on-failure"
    assert settings["ExecStart"].startswith("/usr/bin/exthandler daemon --config ")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Extensions run as root and change the system: nothing may take that away from them.
    for option in ("User", "ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateDevices"):
        assert option not in settings


def test_config_unit_starts_this_exthandler(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "unit"]) == 0
    settings = _settings(capsys.readouterr().out)
    assert settings["ExecStart"] == (
        f"{sys.executable} -m exthandler daemon --config /etc/exthandler/exthandler.toml"
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "unit"]) == 0
    unit = tmp_path / "exthandler.service"
    unit.write_text(capsys.readouterr().out)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "exthandler.service" not in result.stderr, result.stderr


def test_notifier_reads_and_removes_systemds_variables() -> None:
    environ = {"NOTIFY_SOCKET": "@sock", "WATCHDOG_USEC": "3000000", "PATH": "/bin"}
    notifier = Notifier.from_environ(environ)
    assert notifier is not None
    assert (notifier.address, notifier.watchdog) == ("@sock", 1.5)
    assert environ == {"PATH": "/bin"}
    assert Notifier.from_environ({}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "relative"}) is None


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("", "", None),
        ("0", "", None),
        ("abc", "", None),
        ("1000000", "", 0.5),
        ("1000000", "1", None),  # another process's watchdog
        ("1000000", str(os.getpid()), 0.5),
    ],
)
def test_watchdog_interval(usec: str, pid: str, expected: float | None) -> None:
    assert watchdog_interval(usec, pid) == expected


def test_a_message_per_datagram_with_newlines_flattened(tmp_path: Path) -> None:
    name = f"exthandler-unit-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(30)
    try:
        notifier = Notifier(f"@{name}")
        notifier.send("READY=1", "STATUS=two\nlines")
        assert sock.recv(4096) == b"READY=1\nSTATUS=two lines"
        notifier.close()
    finally:
        sock.close()
    gone = Notifier(str(tmp_path / "gone.sock"))
    gone.send("READY=1")  # nobody listening: no error
    gone.close()


def test_no_watchdog_ping_follows_stopping() -> None:
    name = f"exthandler-unit-stop-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(30)
    try:
        notifier = Notifier(f"@{name}", watchdog=0.1)
        notifier.send("WATCHDOG=1")
        notifier.send("STOPPING=1", "STATUS=stopping (SIGTERM)")
        notifier.send("WATCHDOG=1")  # a ping already on its way when the signal came
        notifier.status("stopped")
        received = [sock.recv(4096) for _ in range(3)]
        notifier.close()
    finally:
        sock.close()
    assert received == [b"WATCHDOG=1", b"STOPPING=1\nSTATUS=stopping (SIGTERM)", b"STATUS=stopped"]
