"""`exthandler daemon`: the small, stable parent that runs an agent version as its child.

The daemon runs `run` from the version to run (see `Daemon.choose`): the version the agent
selected last (`agent/selected`) when it is installed and good, else the newest good
installed version, else this installation, whose version counts as one more candidate
(a newer exthandler from the package manager wins over older installed versions).

It forwards SIGTERM, SIGINT and SIGHUP to the child, and starts the child again when it
exits: at once after `RESTART_EXIT` (the child installed a new version and selected it),
after `restart_delay` seconds after an abnormal exit (a non-zero status or a signal),
after `locked_delay` seconds when another process held the state dir (exit status 3,
not counted against the version). A version whose child exits abnormally `limit` times
within `window` seconds is marked bad (kept on disk, never started again) and the daemon
goes back to the version that ran before it. When this installation itself keeps failing
so, there is nothing to go back to: the daemon exits 1 (2 when the child's status was 2:
an invalid configuration or an unusable path) and leaves the restart to the service
manager.

The daemon never takes the state dir's lock: its child does, so the old version has let
go of it by the time the new one starts; a child gets SIGTERM when the daemon dies, so
that no orphan keeps the state dir from the next daemon. The daemon owns systemd's
notify socket: the child gets a private socket instead (in a 0700 dir), and the daemon
relays what the child says there (`READY=1`, `STATUS=`, `RELOADING=1`); `STOPPING=1` is
the daemon's own, sent when it is told to stop, and so are the `WATCHDOG=1` pings to
systemd.

The child's health is the daemon's business: the child gets a watchdog of its own
(`$WATCHDOG_USEC`: it pings every quarter of `health_timeout`). A child that said
anything and then stays silent for `health_timeout` seconds (a wedged event loop, a
deadlock) is unresponsive: the daemon kills it and counts it as an abnormal exit, so that
a version that hangs is marked bad and rolled back from like one that crashes (systemd's
own watchdog would only restart the same version again).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from .. import __version__
from .._model import Version
from .agents import AgentStore
from .notify import Notifier

__all__ = [
    "FAILURE_LIMIT",
    "FAILURE_WINDOW",
    "HEALTH_TIMEOUT",
    "RESTART_EXIT",
    "UNDER_DAEMON",
    "Daemon",
]

RESTART_EXIT = 75
"""The exit status of a `run` that installed and selected a new agent version: start it."""
FAILURE_LIMIT = 3
FAILURE_WINDOW = 300.0
"""A version that exits abnormally FAILURE_LIMIT times within FAILURE_WINDOW s is bad."""
UNDER_DAEMON = "EXTHANDLER_DAEMON"
"""Set in the child's environment: `run` knows a daemon restarts it into a new version."""
_RELAYED = ("READY=", "STATUS=", "RELOADING=", "ERRNO=", "EXTEND_TIMEOUT_USEC=")
HEALTH_TIMEOUT = 120.0
"""Seconds a child that has spoken may stay silent on its notify socket (see above)."""
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@attrs.frozen
class Choice:
    """A version to run, and whether it is an installed agent version (else: this
    installation, run as `python -m exthandler`)."""

    version: Version
    installed: bool

    def __str__(self) -> str:
        return f"{self.version}{'' if self.installed else ' (this installation)'}"


EXIT_INVALID = 2  # `run`: an invalid configuration, an unusable path
EXIT_LOCKED = 3  # `run`: another process holds the state dir


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the daemon dies, so that a daemon
    killed outright leaves no agent holding the state dir (Linux; elsewhere nothing)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


UNRESPONSIVE = -(1 << 16)
"""`Daemon._wait`'s status for a child killed because it stopped answering."""


def _describe(status: int) -> str:
    if status == UNRESPONSIVE:
        return "no answer (killed)"
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


@attrs.define(eq=False)
class Daemon:
    """The parent of the agent: see the module's docstring. `run_args` are the child's
    arguments after `run`; `say` gets one line per event (stderr, the journal)."""

    store: AgentStore
    run_args: Sequence[str] = ()
    notifier: Notifier | None = None
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    limit: int = FAILURE_LIMIT
    window: float = FAILURE_WINDOW
    restart_delay: float = 1.0
    locked_delay: float = 5.0
    health_timeout: float = HEALTH_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    python: str = sys.executable
    own: Version = attrs.field(factory=lambda: Version.parse(__version__))
    failures: dict[Choice, list[float]] = attrs.field(factory=dict)
    history: list[Choice] = attrs.field(factory=list)  # what ran, oldest first
    _stopping: int | None = attrs.field(default=None, init=False)
    _child: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)
    # When the child last said something (None: not yet), and when systemd was last pinged.
    _heard: float | None = attrs.field(default=None, init=False)
    _pinged: float | None = attrs.field(default=None, init=False)

    # -- which version -------------------------------------------------------------------

    def choose(self) -> Choice:
        """The version to run now: the selected one if it can run; else, after a version
        went bad, the last one that ran before it and can still run; else the newest."""
        good = set(self.store.good())

        def runnable(choice: Choice) -> bool:
            return choice.version in good if choice.installed else choice.version == self.own

        def as_choice(version: Version) -> Choice:
            # This installation wins a tie: it is what the package manager put there.
            return Choice(version, installed=version != self.own)

        selected = self.store.selected()
        if selected is not None and runnable(as_choice(selected)):
            return as_choice(selected)
        for choice in reversed(self.history):
            if runnable(choice):
                return choice
        return as_choice(max([*good, self.own]))

    def command(self, choice: Choice) -> list[str]:
        if choice.installed:
            head = [self.python, str(self.store.launcher(choice.version))]
        else:
            head = [self.python, "-m", "exthandler"]
        return [*head, "run", *self.run_args]

    # -- the loop ------------------------------------------------------------------------

    def stopping(self) -> bool:
        """Whether SIGTERM or SIGINT came: no child is started any more."""
        return self._stopping is not None

    def run(self) -> int:
        """Run children until told to stop (0), or until this installation keeps failing
        with nothing to go back to (1). Call it from the main thread."""
        private = Path(tempfile.mkdtemp(prefix="exthandler-daemon-"))  # 0700
        relay = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        relay.bind(str(private / "notify"))
        relay.setblocking(False)
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        handlers = {
            signum: signal.signal(signum, lambda signum, frame: None)
            for signum in (*_FORWARDED, signal.SIGCHLD)
        }
        selector = selectors.DefaultSelector()
        selector.register(relay, selectors.EVENT_READ, "relay")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        try:
            return self._loop(selector, wake_read, relay, private / "notify")
        finally:
            if self._child is not None and self._child.poll() is None:
                self._child.kill()
                self._child.wait()
            selector.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_read)
            os.close(wake_write)
            relay.close()
            shutil.rmtree(private, ignore_errors=True)
            if self.notifier is not None:
                self.notifier.close()

    def _loop(
        self, selector: selectors.BaseSelector, wake: int, relay: socket.socket, address: Path
    ) -> int:
        while not self.stopping():
            choice = self.choose()
            if self.history and self.history[-1] != choice:
                self.say(f"daemon: switching from {self.history[-1]} to {choice}")
            if not self.history or self.history[-1] != choice:
                self.history.append(choice)
            child = self._start(choice, address)
            status = self._wait(child, selector, wake, relay)
            self._child = None
            if self.stopping():
                self.say(f"daemon: {choice} stopped ({_describe(status)})")
                break
            if status == RESTART_EXIT:
                self.say(f"daemon: {choice} asked to be restarted into the version it selected")
                continue
            if status == 0:
                self.say(f"daemon: {choice} ended on its own (exit status 0); starting it again")
                continue
            if status == EXIT_LOCKED:  # not the version's fault: another process holds it
                self.say("daemon: the state dir is held by another process; waiting for it")
                self._pause(selector, wake, relay, self.locked_delay)
                continue
            if not self._failed(choice, status):
                # An unusable configuration or path stays so: say it as `run` did.
                return EXIT_INVALID if status == EXIT_INVALID else 1
            self._pause(selector, wake, relay, self.restart_delay)
        if self.notifier is not None:
            self.notifier.status("stopped")  # STOPPING=1 was sent when the signal came
        return 0

    def _start(self, choice: Choice, address: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        env["NOTIFY_SOCKET"] = str(address)
        env[UNDER_DAEMON] = "1"
        # The child's own watchdog: pings every quarter of the timeout (half of this).
        env["WATCHDOG_USEC"] = str(max(1, int(self.health_timeout * 1e6 / 2)))
        self._heard = None
        # A group of its own: a terminal's Ctrl-C reaches the child once, through here.
        child = subprocess.Popen(
            self.command(choice), env=env, process_group=0, preexec_fn=_end_with_parent
        )
        self._child = child
        self.say(f"daemon: started {choice} (pid {child.pid})")
        if self.notifier is not None:
            self.notifier.status(f"starting exthandler {choice}")
        return child

    def _wait(
        self,
        child: subprocess.Popen[bytes],
        selector: selectors.BaseSelector,
        wake: int,
        relay: socket.socket,
    ) -> int:
        """Relay and forward until `child` exits; its status (negative: a signal), or
        `UNRESPONSIVE` when it was killed for its silence."""
        while True:
            status = child.poll()
            if status is not None:
                self._drain(relay)
                return status
            self._ping()
            if self._heard is not None and self.clock() - self._heard > self.health_timeout:
                self.say(
                    f"daemon: pid {child.pid} said nothing for {self.health_timeout:g} s"
                    " (no watchdog ping): killing it"
                )
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                child.wait()
                self._drain(relay)
                return UNRESPONSIVE
            for key, _ in selector.select(timeout=self._tick()):
                if key.data == "relay":
                    self._drain(relay)
                else:
                    self._signals(wake, child)

    def _tick(self) -> float:
        """How long the loop may sleep: a second, less with short timeouts."""
        periods = [1.0, self.health_timeout / 4]
        if self.notifier is not None and self.notifier.watchdog is not None:
            periods.append(self.notifier.watchdog)
        return max(0.01, min(periods))

    def _ping(self) -> None:
        """systemd's watchdog, from the daemon itself (its child's health is checked here)."""
        if self.notifier is None or self.notifier.watchdog is None:
            return
        now = self.clock()
        if self._pinged is None or now - self._pinged >= self.notifier.watchdog:
            self._pinged = now
            self.notifier.send("WATCHDOG=1")

    def _pause(
        self, selector: selectors.BaseSelector, wake: int, relay: socket.socket, delay: float
    ) -> None:
        """Wait `delay` seconds before a restart; a stop ends the wait."""
        deadline = self.clock() + delay
        while not self.stopping() and (left := deadline - self.clock()) > 0:
            self._ping()
            for key, _ in selector.select(timeout=min(left, self._tick())):
                if key.data == "relay":
                    self._drain(relay)
                else:
                    self._signals(wake, None)

    def _signals(self, wake: int, child: subprocess.Popen[bytes] | None) -> None:
        try:
            data = os.read(wake, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum not in _FORWARDED:
                continue  # SIGCHLD: only wakes the loop
            name = signal.Signals(signum).name
            if signum != signal.SIGHUP and self._stopping is None:
                self._stopping = signum
                self.say(f"daemon: {name}, stopping")
                if self.notifier is not None:
                    self.notifier.send("STOPPING=1", f"STATUS=stopping ({name})")
            if child is not None and child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)
                if signum == signal.SIGHUP:
                    self.say(f"daemon: SIGHUP passed on to pid {child.pid}")

    def _drain(self, relay: socket.socket) -> None:
        while True:
            try:
                data = relay.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            self._heard = self.clock()
            fields = [
                field
                for field in data.decode("utf-8", "replace").split("\n")
                if field.startswith(_RELAYED)
            ]
            if fields and self.notifier is not None:
                self.notifier.send(*fields)

    def _failed(self, choice: Choice, status: int) -> bool:
        """Count an abnormal exit of `choice`; whether there is a version to run next."""
        now = self.clock()
        times = [t for t in self.failures.get(choice, []) if now - t < self.window] + [now]
        self.failures[choice] = times
        what = f"{choice} exited abnormally ({_describe(status)})"
        if len(times) < self.limit:
            self.say(f"daemon: {what}, {len(times)} of {self.limit} within {self.window:g} s")
            return True
        reason = (
            f"exited abnormally {len(times)} times within {self.window:g} s,"
            f" last with {_describe(status)}"
        )
        if not choice.installed:
            self.say(f"daemon: {what}; this installation {reason}: nothing to go back to")
            if self.notifier is not None:
                self.notifier.status(f"exthandler {choice} keeps failing")
            return False
        self.store.mark_bad(choice.version, reason)
        self.failures.pop(choice, None)
        following = self.choose()
        self.say(f"daemon: agent {choice.version} {reason}: marked bad, going back to {following}")
        if self.store.selected() == choice.version:
            self.store.select(following.version)
        if self.notifier is not None:
            self.notifier.status(f"agent {choice.version} marked bad, going back to {following}")
        return True
