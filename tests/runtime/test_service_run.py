"""`exthandler run` as a service: a real process with a configuration file, SIGHUP and
SIGTERM, and a real unix datagram socket as systemd's notify socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.runtime.support import Agent, Packages, extension, goal, status_of, wait_until

# Enable blocks while `block` exists, after saying it started; it records whether it saw
# the notify socket (systemd's variables are not for extensions).
_ENABLE = (
    'touch "$dir/../started"\n'
    'echo "${NOTIFY_SOCKET:-unset}" > "$dir/../notify-socket"\n'
    'while [ -e "$dir/../../block" ]; do sleep 0.05; done\n'
    'write_status success 0 "seq $ConfigSequenceNumber"'
)


@attrs.define
class NotifySocket:
    """A bound unix datagram socket, as systemd's; `messages` are the datagrams so far."""

    address: str
    sock: socket.socket
    messages: list[str] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def fields(self) -> list[str]:
        with self._lock:
            return [field for message in self.messages for field in message.split("\n")]

    def seen(self, field: str) -> bool:
        return field in self.fields()

    def count(self, field: str) -> int:
        return self.fields().count(field)


def _notify_socket(address: str, bind_to: str | bytes) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(bind_to)
    listener = NotifySocket(address, sock)
    thread = threading.Thread(target=listener.receive, daemon=True)
    thread.start()
    yield listener
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    thread.join(10)


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify.sock"
    yield from _notify_socket(str(path), str(path))


@pytest.fixture
def notify_abstract(tmp_path: Path) -> Iterator[NotifySocket]:
    name = f"exthandler-test-{os.getpid()}-{tmp_path.name}"
    yield from _notify_socket(f"@{name}", b"\0" + name.encode())


@attrs.define
class Service:
    process: subprocess.Popen[str]
    errors: list[str] = attrs.field(factory=list)

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.errors))

    def stop(self, reader: threading.Thread) -> int:
        """SIGTERM, then the exit status once the process and its stderr are done."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        reader.join(10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def _start(
    config: Path, notify: NotifySocket | None = None, *, watchdog_usec: int | None = None
) -> tuple[Service, threading.Thread]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    process = subprocess.Popen(
        [sys.executable, "-m", "exthandler", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    service = Service(process)
    reader = threading.Thread(target=service.read, daemon=True)
    reader.start()
    return service, reader


@pytest.fixture
def service_config(agent: Agent) -> Path:
    config = agent.root / "exthandler.toml"
    config.write_text(
        f'source = "goal.json"\nstate_dir = "state"\nrepo = ["{agent.repo}"]\ninterval = 0.1\n'
    )
    return config


def test_reload_waits_for_the_pass_in_flight_and_keeps_its_work(
    agent: Agent, packages: Packages, service_config: Path, notify_path: NotifySocket
) -> None:
    packages.build("Test.Ext", "1.0.0", actions={"enable": _ENABLE})
    block = agent.root / "block"
    block.write_text("")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    service, reader = _start(service_config, notify_path)
    try:
        wait_until(lambda: (agent.state / "started").exists(), what="enable started")
        wait_until(lambda: notify_path.seen("READY=1"), what="READY=1")
        # What runs is told: the blocked enable is the step in flight.
        wait_until(
            lambda: any(f.startswith("STATUS=running enable") for f in notify_path.fields()),
            what="a STATUS= line naming the enable",
        )
        service_config.write_text(service_config.read_text() + "concurrency = 2\n")
        service.process.send_signal(signal.SIGHUP)
        wait_until(lambda: notify_path.seen("RELOADING=1"), what="RELOADING=1")
        block.unlink()  # the enable in flight may end now
        wait_until(lambda: service.said("configuration reloaded: concurrency changed"))
    finally:
        code = service.stop(reader)
    assert code == 0, service.errors
    log = (agent.state / "exthandler.log").read_text().splitlines()
    applied = next(i for i, line in enumerate(log) if "run: applied" in line)
    reloaded = next(i for i, line in enumerate(log) if "configuration reloaded" in line)
    assert applied < reloaded, log  # the pass ended before the new configuration took over
    assert [op.op for op in agent.ops()] == ["install", "enable"]  # nothing ran twice
    view = json.loads((agent.state / ".exthandler" / "instance-view.json").read_text())
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert (agent.state / "notify-socket").read_text().strip() == "unset"


def test_an_invalid_new_file_keeps_the_configuration_in_use(
    agent: Agent, packages: Packages, service_config: Path, notify_abstract: NotifySocket
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    good = service_config.read_text()
    service, reader = _start(service_config, notify_abstract)
    try:
        wait_until(lambda: service.said("run: applied") or service.said("applied"))
        service_config.write_text(good.replace("interval = 0.1", "interval = 'soon'"))
        service.process.send_signal(signal.SIGHUP)
        wait_until(lambda: service.said("keeping the configuration in use"))
        # Still served with the old configuration: a new goal state is applied.
        agent.goal_path.write_text(json.dumps(goal(extension("ext", settings={"n": 1}))))
        wait_until(lambda: [op.op for op in agent.ops()] == ["install", "enable", "enable"])
        # A valid file again: the change is applied.
        service_config.write_text(good.replace("interval = 0.1", "interval = 0.2"))
        service.process.send_signal(signal.SIGHUP)
        wait_until(lambda: service.said("configuration reloaded: interval changed"))
        wait_until(lambda: notify_abstract.count("READY=1") >= 3)
    finally:
        code = service.stop(reader)
    assert code == 0, service.errors
    path = service_config
    reason = "expected a positive number of seconds, not a string"
    assert f"configuration not reloaded: {path}: interval: {reason}" in service.errors
    log = (agent.state / "exthandler.log").read_text()
    assert f"configuration not reloaded: {path}: interval:" in log
    assert notify_abstract.count("RELOADING=1") == 2
    assert "STOPPING=1" in notify_abstract.fields()
    assert "STATUS=configuration invalid, keeping the one in use" in notify_abstract.fields()


def test_a_reload_that_names_another_state_dir_reopens_the_runtime(
    agent: Agent, packages: Packages, service_config: Path
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    service, reader = _start(service_config)
    try:
        wait_until(lambda: service.said("applied"))
        service_config.write_text(service_config.read_text().replace('"state"', '"state2"'))
        service.process.send_signal(signal.SIGHUP)
        wait_until(lambda: service.said("state_dir changed; reopening the runtime"))
        wait_until(lambda: (agent.root / "state2" / ".exthandler" / "instance-view.json").exists())
    finally:
        code = service.stop(reader)
    assert code == 0, service.errors
    # Both state dirs were served: the extension was installed in each.
    assert [op.op for op in agent.ops()] == ["install", "enable", "install", "enable"]


def test_notify_ready_status_watchdog_stopping(
    agent: Agent, service_config: Path, notify_path: NotifySocket
) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    service, reader = _start(service_config, notify_path, watchdog_usec=200_000)
    try:
        wait_until(lambda: notify_path.seen("READY=1"))
        # READY=1 only once the state dir is taken.
        assert (agent.state / ".exthandler" / "lock").read_text().strip() == str(
            service.process.pid
        )
        wait_until(lambda: notify_path.count("WATCHDOG=1") >= 2)
    finally:
        code = service.stop(reader)
    assert code == 0
    fields = notify_path.fields()
    assert f"STATUS=watching {agent.goal_path}" in fields
    # STOPPING=1 goes out with its reason, and no watchdog ping follows it (the end of a
    # pass that SIGTERM interrupted may still say how it ended).
    at = fields.index("STOPPING=1")
    assert fields[at + 1] == "STATUS=stopping (SIGTERM)"
    assert "WATCHDOG=1" not in fields[at:]
    assert fields.count("STOPPING=1") == 1


def test_no_watchdog_without_watchdog_usec(
    agent: Agent, service_config: Path, notify_path: NotifySocket
) -> None:
    agent.goal_path.write_text(json.dumps(goal()))
    service, reader = _start(service_config, notify_path)
    try:
        wait_until(lambda: service.said("applied"))
    finally:
        code = service.stop(reader)
    assert code == 0
    assert "READY=1" in notify_path.fields()
    assert "WATCHDOG=1" not in notify_path.fields()


def test_extensions_turned_off_in_the_file_say_where_to_turn_them_on(
    agent: Agent, service_config: Path
) -> None:
    service_config.write_text(service_config.read_text() + "no_extensions = true\n")
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    service, reader = _start(service_config)
    view_file = agent.state / ".exthandler" / "instance-view.json"
    try:
        wait_until(lambda: service.said("applied"))
    finally:
        assert service.stop(reader) == 0
    document = json.loads(view_file.read_text())
    (ext,) = document["extensions"]
    message = ext["statuses"][0]["message"]
    assert message.endswith(f"set no_extensions = false in '{service_config}'")
