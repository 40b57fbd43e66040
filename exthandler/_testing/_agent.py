"""`exthandler_agent`: a real runtime on temporary dirs, observed and made to misbehave.

Each `apply` opens a runtime on the agent's state dir (as a fresh `exthandler apply` would),
with the handler classes added so far registered in process, the packages added so far in
its repository, and a `CommandLog` plugin that writes down every command step from the
`exthandler_step_started/finished` hooks, with the protocol variables the command got.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from exthandler_sdk import Handler, Operation
from exthandler_sdk._package import build_package
from exthandler_sdk.protocol import PACKAGE_SEPARATOR, PACKAGE_SUFFIX, SIGNATURE_SUFFIX

from .._goalstate import parse_goal_state
from .._model import GoalState
from .._report.view import ExtensionView, InstanceView, StatusView
from .._runtime import RuntimeConfig, open_runtime, read_instance_view
from ._ca import SigningCA
from ._certs import seed_certificate
from ._faults import (
    KILL_AT_VARIABLE,
    KILL_DIR_VARIABLE,
    KILL_HANDLER_VARIABLE,
    Fault,
    FaultKind,
    add_kill_points,
    faulty_class,
    faulty_package,
)
from ._killed import STEPS_VARIABLE, plugin_path, replay
from ._loop import TestingUsageError, check_backend, run_blocking
from ._record import CommandLog, CommandRecord

__all__ = ["Agent", "KilledApply"]

GoalInput = Mapping[str, Any] | str | bytes | GoalState


@attrs.frozen(kw_only=True)
class KilledApply:
    """What `Agent.apply_killed` did: the command it interrupted, and the dead runtime's exit."""

    operation: str
    handler_dir: str
    returncode: int
    stderr: str


@attrs.define(eq=False)
class Agent:
    """A runtime on `root` (state dir, repository, log root and boot id file below it).

    Settable before any `apply`: `command_timeout` (every command's limit), `kill_grace`,
    `concurrency`, `load_entry_points` (also run the handlers of installed plugins),
    `hang_timeout` (the limit given to a handler with a `hang` fault). `backend` is the
    anyio backend `apply` runs the runtime on ("asyncio" or "trio"); `aapply` runs it on
    the caller's. `signing_ca` (a `SigningCA`) signs packages added with `sign=True` and is
    the runtime's trusted root; `policy` is the policy file (see `set_policy`).
    """

    root: Path = attrs.field(converter=Path)
    certificate_dir: Path | None = None
    command_timeout: float | None = None
    kill_grace: float = 0.5
    concurrency: int = 8
    load_entry_points: bool = False
    hang_timeout: float = 2.0
    kill_points: bool = True
    backend: str = attrs.field(default="asyncio", converter=check_backend)
    signing_ca: SigningCA | None = None
    policy: Path | None = None
    last_view: InstanceView | None = attrs.field(default=None, init=False)
    _handlers: dict[tuple[str, str], type[Handler[Any, Any]]] = attrs.field(
        factory=dict, init=False
    )
    _timeouts: dict[str, float] = attrs.field(factory=dict, init=False)
    _log: CommandLog = attrs.field(factory=CommandLog, init=False)
    _taken: int = attrs.field(default=0, init=False)
    _processes: list[subprocess.Popen[bytes]] = attrs.field(factory=list, init=False)
    _kill_groups: list[int] = attrs.field(factory=list, init=False)
    _runs: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        for directory in (self.state_dir, self.repo, self.log_root):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.boot_id_path.exists():
            self.boot_id_path.write_text("boot-0\n")
        if self.certificate_dir is not None:
            seed_certificate(self.certificate_dir, self.state_dir)

    # -- layout ----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def repo(self) -> Path:
        """The package repository: the zips added so far."""
        return self.root / "repo"

    @property
    def log_root(self) -> Path:
        return self.root / "log"

    @property
    def boot_id_path(self) -> Path:
        return self.root / "boot_id"

    def handler_dir(self, handler: str, version: str) -> Path:
        """`<state dir>/<Publisher.Type>-<version>`."""
        return self.state_dir / f"{handler}-{version}"

    # -- handlers and packages -------------------------------------------------------------

    def add_handler(
        self, handler_class: type[Handler[Any, Any]], *, fault: Fault | None = None
    ) -> type[Handler[Any, Any]]:
        """Run `handler_class` in process (with `fault` injected); returns the class used.

        Adding the same name and version again replaces the earlier class.
        """
        handler_class.check()
        if fault is not None:
            handler_class = faulty_class(handler_class, fault)
            self._fault_added(handler_class.name, fault)
        self._handlers[(handler_class.name.lower(), handler_class.version)] = handler_class
        return handler_class

    def add_package(
        self,
        package: Path | str,
        *,
        fault: Fault | None = None,
        kill_points: bool | None = None,
        sign: bool = False,
    ) -> Path:
        """Copy the zip `Publisher.Type__Version.zip` (and its `.sha256`) into the repository,
        with `fault` injected; returns the copy's path. With `sign`, the copy is signed
        by the agent's `signing_ca` (its `.zip.sig` written beside it).

        Unless `kill_points` (default: the agent's) is false, each command of the copy can
        also serve as a kill point for `apply_killed`; outside `apply_killed` that changes
        nothing but the command line the runtime logs.
        """
        source = Path(package)
        target = self.repo / source.name
        shutil.copyfile(source, target)
        sidecar = source.with_name(source.name + ".sha256")
        if sidecar.exists():
            shutil.copyfile(sidecar, target.with_name(target.name + ".sha256"))
        if fault is not None:
            faulty_package(target, fault)
            self._fault_added(source.name.partition(PACKAGE_SEPARATOR)[0], fault)
        if self.kill_points if kill_points is None else kill_points:
            spared = None if fault is None else fault.operation
            add_kill_points(target, tuple(op for op in Operation if op != spared))
        signature = target.with_name(target.name + SIGNATURE_SUFFIX)
        signature.unlink(missing_ok=True)
        if sign:
            if self.signing_ca is None:
                raise TestingUsageError("sign=True needs the agent's signing_ca")
            self.signing_ca.sign_package(target)
        return target

    def add_packages(self, directory: Path | str) -> list[Path]:
        """`add_package` for every zip in `directory` (e.g. examples/repo)."""
        packages = sorted(Path(directory).glob(f"*{PACKAGE_SUFFIX}"))
        return [self.add_package(path) for path in packages]

    def add_built_package(
        self,
        handler_class: type[Handler[Any, Any]],
        spec: str | None = None,
        *,
        fault: Fault | None = None,
        sign: bool = False,
    ) -> Path:
        """Package `handler_class` with the SDK (`spec`: its `module:Class`, by default where
        it is defined) and add the zip: it then runs out of process, as a real package.
        With `sign`, it carries `signingInfo` and is signed by the agent's `signing_ca`."""
        spec = spec or f"{handler_class.__module__}:{handler_class.__qualname__}"
        out = self.root / "built"
        signer = None
        if sign:
            if self.signing_ca is None:
                raise TestingUsageError("sign=True needs the agent's signing_ca")
            signer = self.signing_ca.signer()
        path = build_package(handler_class, spec, out, signer=signer)
        return self.add_package(path, fault=fault, sign=sign)

    def set_policy(self, document: Mapping[str, Any] | None) -> Path | None:
        """Write `document` as the runtime's policy file (None: no policy); its path."""
        if document is None:
            self.policy = None
            return None
        path = self.root / "policy.json"
        path.write_text(json.dumps(document))
        self.policy = path
        return path

    def _fault_added(self, handler: str, fault: Fault) -> None:
        if fault.kind == FaultKind.HANG:
            self._timeouts[handler] = self.hang_timeout

    # -- applying --------------------------------------------------------------------------

    def goal_state(
        self, goal: GoalInput, *, sequence_numbers: Mapping[str, int] | None = None
    ) -> GoalState:
        """`goal` (a native dict, text or bytes in any format, or a GoalState) parsed, with
        the extensions named in `sequence_numbers` given those sequence numbers."""
        if isinstance(goal, GoalState):
            parsed = goal
        elif isinstance(goal, str | bytes):
            parsed = parse_goal_state(goal)
        else:
            parsed = parse_goal_state(json.dumps(goal))
        if sequence_numbers:
            wanted = {name.lower(): number for name, number in sequence_numbers.items()}
            missing = set(wanted) - {ext.name.lower() for ext in parsed.extensions}
            if missing:
                raise KeyError(f"no extension {', '.join(sorted(missing))} in the goal state")
            extensions = tuple(
                ext.replace(sequence_number=wanted.get(ext.name.lower(), ext.sequence_number))
                for ext in parsed.extensions
            )
            parsed = parsed.replace(extensions=extensions)
        return parsed

    def config(self) -> RuntimeConfig:
        """The RuntimeConfig each `apply` opens its runtime with."""
        return RuntimeConfig(
            state_dir=self.state_dir,
            repositories=[self.repo],
            log_root=self.log_root,
            concurrency=self.concurrency,
            command_timeout=self.command_timeout,
            handler_timeouts=dict(self._timeouts),
            kill_grace=self.kill_grace,
            boot_id_path=self.boot_id_path,
            plugins=[self._log],
            load_entry_points=self.load_entry_points,
            handlers=list(self._handlers.values()),
            policy=self.policy,
            trusted_roots=(
                [self.signing_ca.root.certificate_path] if self.signing_ca is not None else []
            ),
        )

    def apply(
        self, goal: GoalInput, *, sequence_numbers: Mapping[str, int] | None = None
    ) -> InstanceView:
        """Converge to `goal` (see `goal_state`) with a new runtime; the final instance view."""
        return run_blocking(
            lambda: self.aapply(goal, sequence_numbers=sequence_numbers),
            call="exthandler_agent.apply()",
            instead="exthandler_agent.aapply(...)",
            backend=self.backend,
        )

    async def aapply(
        self, goal: GoalInput, *, sequence_numbers: Mapping[str, int] | None = None
    ) -> InstanceView:
        """`apply` for async tests."""
        parsed = self.goal_state(goal, sequence_numbers=sequence_numbers)
        async with open_runtime(self.config()) as runtime:
            view = await runtime.apply(parsed)
        self.last_view = view
        return view

    def reboot(self) -> None:
        """A new boot id: the next apply runs every enabled extension's enable once more."""
        self.boot_id_path.write_text(f"{uuid.uuid4()}\n")

    # -- what happened ---------------------------------------------------------------------

    def instance_view(self) -> InstanceView:
        """The instance view the last runtime left in the state dir."""
        view = read_instance_view(self.state_dir)
        if view is None:
            raise AssertionError("no instance view yet: nothing was applied")
        return view

    def extension(self, name: str) -> ExtensionView:
        """The extension called `name` in the instance view (AssertionError if absent)."""
        view = self.instance_view()
        found = view.extension(name)
        if found is None:
            names = ", ".join(ext.name for ext in view.extensions) or "none"
            raise AssertionError(f"no extension {name!r} in the instance view (there are: {names})")
        return found

    def status(self, name: str) -> StatusView:
        """The (first) status the instance view shows for extension `name`."""
        extension = self.extension(name)
        if not extension.statuses:
            raise AssertionError(f"extension {name!r} shows no status")
        return extension.statuses[0]

    @property
    def commands(self) -> list[CommandRecord]:
        """Every command so far, in the order they started."""
        return list(self._log.records)

    def take_commands(self) -> list[CommandRecord]:
        """The commands started since the last `take_commands`."""
        taken = self._log.records[self._taken :]
        self._taken = len(self._log.records)
        return list(taken)

    def handler_class(self, handler: str, version: str) -> type[Handler[Any, Any]] | None:
        """The class added (with `add_handler`) for `Publisher.Type` `handler` at `version`."""
        return self._handlers.get((handler.lower(), version))

    # -- killing the runtime ---------------------------------------------------------------

    def apply_killed(
        self,
        goal: Mapping[str, Any] | str,
        at: Operation | str,
        *,
        handler: str | None = None,
        timeout: float = 60.0,
    ) -> KilledApply:
        """Apply `goal` with `python -m exthandler apply` and SIGKILL that runtime as soon as
        the command of operation `at` (of `handler`, `Publisher.Type` or
        `Publisher.Type-Version`, when given) starts; the command is killed too.

        Only packages added with kill points can be interrupted (handler classes run in
        process and are unknown to the CLI: package them with `add_built_package`). The
        commands the killed runtime ran are recorded as its step hooks reported them (see
        `_killed`); the interrupted one with `ok=False`. A later `apply` shows what
        recovery does.
        """
        operation = Operation(at)
        self._runs += 1
        work = self.root / "killed" / str(self._runs)
        work.mkdir(parents=True)
        goal_path = work / "goal.json"
        goal_path.write_text(goal if isinstance(goal, str) else json.dumps(goal))
        steps = work / "steps.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXTHANDLER_")}
        env.update(
            {
                KILL_DIR_VARIABLE: str(work),
                KILL_AT_VARIABLE: operation.value,
                KILL_HANDLER_VARIABLE: handler or "",
                STEPS_VARIABLE: str(steps),
                "EXTHANDLER_BOOT_ID_FILE": str(self.boot_id_path),
                "PYTHONPATH": os.pathsep.join(
                    [str(plugin_path(work / "plugin")), *filter(None, [env.get("PYTHONPATH")])]
                ),
            }
        )
        command = [sys.executable, "-m", "exthandler", "apply", str(goal_path)]
        command += ["--state-dir", str(self.state_dir), "--repo", str(self.repo)]
        command += ["--log-root", str(self.log_root), "--concurrency", "1", "--json"]
        if self.command_timeout is not None:
            command += ["--command-timeout", str(self.command_timeout)]
        with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )
        self._processes.append(process)
        marker = work / "at"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                self._stop(process)
                stderr = (work / "stderr").read_text(errors="replace")
                raise AssertionError(
                    f"the runtime never started {operation.value}"
                    + (f" of {handler}" if handler else "")
                    + f" (exit code {process.returncode}); is it a package added with kill"
                    f" points?\n{stderr[-2000:]}"
                )
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        pid, _, handler_dir = marker.read_text().strip().partition(" ")
        self._kill_group(int(pid))
        self._log.records.extend(replay(steps, abandoned="interrupted: the runtime was killed"))
        return KilledApply(
            operation=operation.value,
            handler_dir=handler_dir,
            returncode=process.returncode,
            stderr=(work / "stderr").read_text(errors="replace"),
        )

    def _kill_group(self, pid: int) -> None:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return
        self._kill_groups.append(group)
        _killpg(group)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Kill every process the agent started that is still running (fixture teardown)."""
        for process in self._processes:
            self._stop(process)
        for group in self._kill_groups:
            _killpg(group)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _killpg(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
