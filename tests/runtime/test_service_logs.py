"""The runtime's log rotated by size or left to logrotate, and `exthandler logs`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exthandler._cli.main import main
from exthandler._state.statedir import StateDir
from tests.runtime.support import Agent, Packages, extension, goal, wait_until


def _state(tmp_path: Path, **options: int) -> StateDir:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    return StateDir(root=root, log_root=root / "log", **options)  # type: ignore[arg-type]


def _lines(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


def test_the_log_rotates_by_size_keeping_backups(tmp_path: Path) -> None:
    state = _state(tmp_path, log_max_bytes=300, log_backups=2)
    for number in range(60):
        state.log(f"line {number:03d}")
    log = state.log_path
    names = sorted(p.name for p in log.parent.iterdir() if p.name.startswith("exthandler.log"))
    assert names == ["exthandler.log", "exthandler.log.1", "exthandler.log.2"]
    for name in names:
        assert 0 < (log.parent / name).stat().st_size <= 300
        assert (log.parent / name).stat().st_mode & 0o777 == 0o600
    kept = _lines(log.parent / "exthandler.log.2") + _lines(log.parent / "exthandler.log.1")
    kept += _lines(log)
    # The newest lines, in order, none lost between the files kept.
    assert kept == [f"line {n:03d}" for n in range(60 - len(kept), 60)]


def test_no_rotation_with_max_bytes_0_and_a_moved_log_is_made_anew(tmp_path: Path) -> None:
    state = _state(tmp_path, log_max_bytes=0)
    for number in range(100):
        state.log(f"line {number}")
    moved = state.log_path.with_name("exthandler.log-20261203")
    state.log_path.rename(moved)  # what logrotate does
    state.log("after the move")
    assert len(_lines(moved)) == 100
    assert _lines(state.log_path) == ["after the move"]


def test_rotation_removes_the_oldest_without_backups(tmp_path: Path) -> None:
    state = _state(tmp_path, log_max_bytes=100, log_backups=0)
    for number in range(20):
        state.log(f"line {number}")
    assert sorted(p.name for p in state.root.iterdir() if "exthandler.log" in p.name) == [
        "exthandler.log"
    ]
    assert _lines(state.log_path)[-1] == "line 19"


def test_logs_shows_the_runtime_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path)
    for number in range(5):
        state.log(f"line {number}")
    assert main(["logs", "--state-dir", str(state.root), "--lines", "2"]) == 0
    assert _out_lines(capsys.readouterr().out) == ["line 3", "line 4"]


def test_logs_reads_the_configured_log_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exthandler.toml"
    config.write_text('state_dir = "state"\n[log]\nfile = "agent.log"\n')
    (tmp_path / "agent.log").write_text("2026-12-03T00:00:00Z hello\n")
    assert main(["logs", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "2026-12-03T00:00:00Z hello\n"


def _out_lines(text: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in text.splitlines()]


def test_logs_of_an_extension_never_follow_links(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0")
    code, _ = agent.apply(goal(extension("MyExt")))
    assert code == 0
    folder = agent.state / "log" / "Test.Ext"
    (folder / "handler.log").write_text("first\nsecond\nthird\n")
    secret = agent.root / "secret"
    secret.write_text("do not show\n")
    (folder / "planted.log").symlink_to(secret)
    capsys.readouterr()
    assert main(["logs", "myext", "--state-dir", str(agent.state), "--lines", "2"]) == 0
    out, err = capsys.readouterr()
    assert f"==> {folder / 'CommandExecution.log'} <==\n" in out
    assert out.endswith(f"\n==> {folder / 'handler.log'} <==\nsecond\nthird\n")
    assert "do not show" not in out
    assert f"exthandler: {folder / 'planted.log'}: a symbolic link, not followed\n" in err
    # The handler's name finds the same folder.
    assert main(["logs", "Test.Ext", "--state-dir", str(agent.state), "--lines", "1"]) == 0
    assert "third" in capsys.readouterr().out


def test_logs_of_an_unknown_extension(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    agent.state.mkdir()
    assert main(["logs", "nope", "--state-dir", str(agent.state)]) == 2
    assert "no extension or handler named 'nope'" in capsys.readouterr().err


def test_logs_follow_across_a_move_and_ends_quietly_on_sigint(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.log("before")
    process = subprocess.Popen(
        [sys.executable, "-m", "exthandler", "logs", "--follow", "--state-dir", str(state.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line.split(" ", 1)[1].rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: seen == ["before"])
        state.log("appended")
        wait_until(lambda: seen == ["before", "appended"])
        state.log_path.rename(state.log_path.with_name("exthandler.log.1"))
        state.log("in the new file")
        wait_until(lambda: seen == ["before", "appended", "in the new file"])
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        reader.join(10)
        assert process.stdout is not None
        assert process.stderr is not None
        err = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
    assert code == 130
    assert err == ""


def test_the_service_rotates_its_configured_log(agent: Agent) -> None:
    config = agent.root / "exthandler.toml"
    config.write_text(
        'source = "goal.json"\nstate_dir = "state"\ninterval = 0.1\n'
        '[log]\nfile = "agent.log"\nmax_bytes = 400\nbackups = 1\n'
    )
    agent.goal_path.write_text(json.dumps(goal()))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    process = subprocess.Popen(
        [sys.executable, "-m", "exthandler", "run", "--config", str(config)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    log = agent.root / "agent.log"
    try:
        wait_until(lambda: log.exists() and "run: applied" in log.read_text())
        rotated = agent.root / "agent.log.1"

        def reloads() -> int:
            files = [f for f in (log, rotated) if f.exists()]
            return sum(f.read_text().count("nothing changed") for f in files)

        def reload_once() -> None:
            before = reloads()
            process.send_signal(signal.SIGHUP)
            wait_until(lambda: reloads() > before, what="a reload")

        while not rotated.exists():  # each reload logs a line: the log grows to its limit
            reload_once()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
    assert (agent.root / "agent.log.1").exists()
    assert not (agent.root / "agent.log.2").exists()
    assert not (agent.state / "exthandler.log").exists()
