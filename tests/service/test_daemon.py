"""`exthandler daemon`: a real parent starting real children, rolling back from a version
that crashes at start, relaying readiness from a private notify socket to systemd's (a
real unix datagram socket), and passing SIGHUP and SIGTERM on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from exthandler import __version__
from tests.runtime.support import Agent, Packages, extension, goal, wait_until
from tests.runtime.test_service_run import NotifySocket, _notify_socket
from tests.service.conftest import Build, install_agent


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "systemd-notify.sock"
    yield from _notify_socket(str(path), str(path))


@attrs.define
class Parent:
    """A running `exthandler daemon` and what it (and its children) said on stderr."""

    process: subprocess.Popen[str]
    lines: list[str] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> list[str]:
        with self._lock:
            return [line for line in self.lines if text in line]

    def started(self) -> list[tuple[str, int]]:
        """(version shown, pid) of every child started so far."""
        found = []
        for line in self.said("daemon: started "):
            match = re.search(r"started (.+) \(pid (\d+)\)", line)
            assert match is not None, line
            found.append((match[1], int(match[2])))
        return found

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        """The exit status once the process and its stderr are done."""
        code = self.process.wait(timeout=120)
        if self._reader is not None:
            # Its stderr ends when the last child holding it is gone too.
            self._reader.join(120)
            assert not self._reader.is_alive(), "stderr still open"
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def start_daemon(
    config: Path, notify: NotifySocket | None = None, *extra: str, watchdog_usec: int | None = None
) -> Parent:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    argv = [sys.executable, "-m", "exthandler", "daemon", "--config", str(config)]
    argv += ["--restart-delay", "0", "--failure-window", "3600", *extra]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    parent = Parent(process)
    parent._reader = threading.Thread(target=parent.read, daemon=True)
    parent._reader.start()
    return parent


@pytest.fixture
def service_config(agent: Agent) -> Path:
    config = agent.root / "exthandler.toml"
    config.write_text(
        f'source = "goal.json"\nstate_dir = "state"\nrepo = ["{agent.repo}"]\ninterval = 0.1\n'
    )
    return config


def _environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


def test_the_daemon_runs_this_installation_and_relays_readiness(
    agent: Agent, packages: Packages, service_config: Path, systemd: NotifySocket
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    parent = start_daemon(service_config, systemd, watchdog_usec=400_000)
    try:
        wait_until(lambda: systemd.seen("READY=1"), what="READY=1 relayed")
        ((shown, pid),) = parent.started()
        assert shown == f"{__version__} (this installation)"
        child = _environ(pid)
        # The child talks to the daemon's private socket, never to systemd's.
        assert child["NOTIFY_SOCKET"] != systemd.address
        assert child["EXTHANDLER_DAEMON"] == "1"
        assert (agent.state / ".exthandler" / "lock").read_text().strip() == str(pid)
        wait_until(lambda: systemd.count("WATCHDOG=1") >= 2, what="WATCHDOG=1 relayed")
        wait_until(lambda: bool(parent.said("applied")))
        # SIGHUP reaches the child: it reads its configuration again.
        service_config.write_text(service_config.read_text() + "concurrency = 2\n")
        parent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(parent.said("configuration reloaded: concurrency changed")))
        assert systemd.seen("RELOADING=1")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    assert len(parent.started()) == 1  # never restarted
    assert parent.said("SIGTERM, stopping")
    assert parent.said(f"{__version__} (this installation) stopped (exit status 0)")
    fields = systemd.fields()
    assert fields.count("STOPPING=1") == 1  # the daemon's own, not the child's as well
    assert fields[-1] == "STATUS=stopped"
    assert fields.index("STOPPING=1") > fields.index("READY=1")
    assert [op.op for op in agent.ops()] == ["install", "enable"]
    assert not (agent.state / ".exthandler" / "lock").exists() or not _alive(agent)


def _alive(agent: Agent) -> bool:
    try:
        pid = int((agent.state / ".exthandler" / "lock").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def test_an_installed_good_version_is_run(
    agent: Agent, service_config: Path, agent_package: Build, systemd: NotifySocket
) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    agent_package("0.1.5", agent.root / "agents")
    agent.state.mkdir()
    launcher = install_agent(agent.state, agent.root / "agents", "0.1.5") / "bin/exthandler-agent"
    parent = start_daemon(service_config, systemd)
    try:
        wait_until(lambda: systemd.seen("READY=1"), what="READY=1 relayed")
        ((shown, pid),) = parent.started()
        assert shown == "0.1.5"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1] == bytes(launcher)
    finally:
        code = parent.stop(signal.SIGINT)
    assert code == 0, parent.lines
    assert parent.said("SIGINT, stopping")


def _good_and_bad(
    agent: Agent, packages: Packages, agent_package: Build, bad: str, **how: bool
) -> None:
    """A goal with one extension, and two installed agent versions: 0.1.5, and `bad`,
    newer, built `how` (crashing or hanging)."""
    packages.build("Test.Ext", "1.0.0")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    agent.state.mkdir()
    agent_package("0.1.5", agent.root / "agents")
    agent_package(bad, agent.root / "agents", **how)
    install_agent(agent.state, agent.root / "agents", "0.1.5")
    install_agent(agent.state, agent.root / "agents", bad)


def test_a_version_that_crashes_at_start_is_marked_bad_and_rolled_back_from(
    agent: Agent,
    packages: Packages,
    service_config: Path,
    agent_package: Build,
    systemd: NotifySocket,
) -> None:
    _good_and_bad(agent, packages, agent_package, "0.1.6", crashing=True)
    parent = start_daemon(service_config, systemd)
    try:
        wait_until(lambda: systemd.seen("READY=1"), what="READY=1 from the good version")
        wait_until(lambda: bool(parent.said("applied ")), what="the goal state applied")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    shown = [version for version, _ in parent.started()]
    assert shown == ["0.1.6", "0.1.6", "0.1.6", "0.1.5"]  # three crashes, then back
    marker = agent.state / "agent" / "0.1.6" / "bad"
    reason = "exited abnormally 3 times within 3600 s, last with exit status 70"
    assert marker.read_text().strip() == reason
    assert parent.said(f"daemon: agent 0.1.6 {reason}: marked bad, going back to 0.1.5")
    assert len(parent.said("crashing at start")) == 3
    assert (agent.state / "agent" / "0.1.6" / "bin" / "exthandler-agent").exists()  # kept
    assert "STATUS=agent 0.1.6 marked bad, going back to 0.1.5" in systemd.fields()
    assert [op.op for op in agent.ops()] == ["install", "enable"]
    # A bad version is never started again, by this daemon or the next.
    agent.ops_log.write_text("")
    again = start_daemon(service_config, systemd)
    try:
        wait_until(lambda: bool(again.said("applied ")), what="the goal state applied")
    finally:
        assert again.stop() == 0
    assert [version for version, _ in again.started()] == ["0.1.5"]
    assert agent.ops() == []  # nothing to do: the journal survived the switches


def test_a_version_that_hangs_is_killed_marked_bad_and_rolled_back_from(
    agent: Agent,
    packages: Packages,
    service_config: Path,
    agent_package: Build,
    systemd: NotifySocket,
) -> None:
    """A child that said READY=1 and then sends no watchdog ping is unresponsive: killed
    and counted like a crash, while the daemon keeps systemd's watchdog fed itself."""
    _good_and_bad(agent, packages, agent_package, "0.1.7", hanging=True)
    parent = start_daemon(service_config, systemd, "--health-timeout", "1", watchdog_usec=400_000)
    try:
        wait_until(lambda: bool(parent.said("applied ")), what="the good version applied")
        wait_until(lambda: systemd.count("WATCHDOG=1") >= 2, what="the daemon's own pings")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    shown = [version for version, _ in parent.started()]
    assert shown == ["0.1.7", "0.1.7", "0.1.7", "0.1.5"]  # three hangs, then back
    assert len(parent.said("said nothing for 1 s (no watchdog ping): killing it")) == 3
    reason = "exited abnormally 3 times within 3600 s, last with no answer (killed)"
    assert (agent.state / "agent" / "0.1.7" / "bad").read_text().strip() == reason
    assert "STATUS=hanging" in systemd.fields()  # what the child said was relayed
    assert [op.op for op in agent.ops()] == ["install", "enable"]


def test_this_installation_failing_ends_the_daemon(agent: Agent, tmp_path: Path) -> None:
    config = agent.root / "exthandler.toml"
    # A state dir that cannot be made: every child exits 2, and so does the daemon.
    (tmp_path / "file").write_text("")
    config.write_text(f'source = "goal.json"\nstate_dir = "{tmp_path / "file" / "state"}"\n')
    agent.goal_path.write_text(json.dumps(goal()))
    parent = start_daemon(config)
    code = parent.wait()
    assert code == 2, parent.lines
    assert len(parent.started()) == 3
    assert parent.said("nothing to go back to")


def test_a_daemon_killed_outright_leaves_no_agent_behind(
    agent: Agent, service_config: Path, systemd: NotifySocket
) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    parent = start_daemon(service_config, systemd)
    try:
        wait_until(lambda: systemd.seen("READY=1"), what="READY=1 relayed")
        ((_, pid),) = parent.started()
        parent.process.kill()
        # The child is told (SIGTERM) and stops cleanly, letting go of the state dir; the
        # daemon's stderr, which it shares, ends with it.
        assert parent.wait() == -signal.SIGKILL
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="child gone")
        assert parent.said("SIGTERM, stopping")
    finally:
        if parent.process.poll() is None:
            parent.stop()
    again = start_daemon(service_config, systemd)
    try:
        wait_until(lambda: bool(again.said("applied ")), what="the next daemon's child applied")
    finally:
        assert again.stop() == 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_a_state_dir_held_by_another_process_is_waited_for_not_counted(
    agent: Agent, service_config: Path
) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    holder = subprocess.Popen(
        [sys.executable, "-m", "exthandler", "run", "--config", str(service_config)],
        stderr=subprocess.PIPE,
    )
    try:
        lock = agent.state / ".exthandler" / "lock"
        wait_until(
            lambda: lock.exists() and lock.read_text().strip() == str(holder.pid), what="held"
        )
        parent = start_daemon(service_config, None, "--failure-limit", "1")
        try:
            wait_until(lambda: bool(parent.said("held by another process")), what="waiting")
            holder.terminate()
            holder.communicate(timeout=60)
            wait_until(lambda: bool(parent.said("applied ")), what="the daemon's child applied")
        finally:
            code = parent.stop()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=60)
    assert code == 0, parent.lines
    assert not parent.said("marked bad")
    assert not parent.said("nothing to go back to")
    assert len(parent.started()) >= 2


def test_run_on_a_held_state_dir_exits_3_with_one_line(agent: Agent, service_config: Path) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    argv = [sys.executable, "-m", "exthandler", "run", "--config", str(service_config)]
    holder = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        lock = agent.state / ".exthandler" / "lock"
        wait_until(
            lambda: lock.exists() and lock.read_text().strip() == str(holder.pid), what="held"
        )
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        holder.terminate()
        holder.wait(timeout=60)
    assert second.returncode == 3
    assert second.stderr.splitlines() == [
        f"exthandler: {agent.state}: another exthandler runtime (pid {holder.pid}) holds this"
        " state dir"
    ]
