"""The engine: converges a goal state by running each handler's steps, journalled.

One task per handler drives it with `_plan.next_step`/`advance`; the record is saved
durably after every step. Handlers run concurrently under a limit on running commands;
removals come first, and a handler waits for the handlers its extensions depend on.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack

import anyio
import attrs
import pluggy
from exthandler_sdk import ErrorCode, Handler, Operation, StatusLevel
from exthandler_sdk.procs import read_boot_id
from exthandler_sdk.protocol import (
    COMMAND_TIMEOUTS,
    CONFIG_DIR,
    HANDLER_ENVIRONMENT_NAME,
    HEARTBEAT_NAME,
    NOT_RUN,
    STATUS_DIR,
    SUPPORTED_FEATURES,
    HeartbeatState,
    StatusReport,
    TelemetryEvent,
    Variable,
    render_settings,
    settings_file_name,
    status_file_name,
)

from ._errors import (
    GoalStateError,
    NoEligibleVersionError,
    PackageError,
    StateDirError,
)
from ._executors.inprocess import (
    InProcessHandlers,
    class_manifest,
    materialize,
    run_inprocess,
)
from ._executors.process import (
    CommandResult,
    base_environment,
    clear_marker,
    end_orphans,
    run_command,
    write_log_entry,
)
from ._extract import extract_package
from ._fs import INLINE_LIMIT, make_dir, write_unless_same
from ._liveview import ExtensionState, LiveView, now
from ._manifest import MANIFEST_NAME, HandlerManifest, read_manifest
from ._model import (
    EncryptedProtectedSettings,
    ExtensionGoal,
    GoalState,
    HandlerName,
    PlainProtectedSettings,
    RequestedState,
    Version,
)
from ._plan import (
    ExtensionRecord,
    HandlerRecord,
    HandlerState,
    HandlerTarget,
    Outcome,
    Step,
    StepKind,
    UpgradePhase,
    advance,
    next_step,
)
from ._plugins import StepResult
from ._repository import PackageCatalog, RepositorySet, package_token
from ._status import read_heartbeat, read_status_file
from ._store import Store
from ._targets import installed_versions, resolve_target
from ._telemetry import EventRateLimiter, collect_events
from ._view import (
    CommandFailure,
    InstanceView,
    SubstatusView,
    compose_status,
)

if TYPE_CHECKING:
    from ._crypto import Certificate

__all__ = ["DEFAULT_TIMEOUTS", "Engine", "EngineOptions"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

DEFAULT_TIMEOUTS: Mapping[Operation, float] = COMMAND_TIMEOUTS
_OPERATIONS = {
    StepKind.INSTALL: Operation.INSTALL,
    StepKind.ENABLE: Operation.ENABLE,
    StepKind.DISABLE: Operation.DISABLE,
    StepKind.UPDATE: Operation.UPDATE,
    StepKind.UNINSTALL: Operation.UNINSTALL,
}


@attrs.frozen(kw_only=True)
class EngineOptions:
    """The engine's share of `RuntimeConfig` (whose defaults these take)."""

    concurrency: int
    command_timeout: float | None
    handler_timeouts: Mapping[str, float]
    kill_grace: float
    dependency_wait: float
    boot_id_path: Path


@attrs.define(eq=False)
class Engine:
    """Owns one state dir (through `store`) and converges goal states into it."""

    store: Store
    repositories: RepositorySet
    options: EngineOptions
    plugins: pluggy.PluginManager
    inprocess: InProcessHandlers = attrs.field(factory=InProcessHandlers)
    view: LiveView = attrs.field(init=False)
    _records: dict[HandlerName, HandlerRecord] = attrs.field(factory=dict)
    _manifests: dict[tuple[HandlerName, Version], HandlerManifest] = attrs.field(factory=dict)
    # Why a handler dir's manifest could not be read (1002 missing, 1003 unparsable).
    _manifest_errors: dict[tuple[HandlerName, Version], PackageError] = attrs.field(factory=dict)
    _certificate: Certificate | None = None
    _limiter: anyio.Semaphore | None = None
    _events: EventRateLimiter = attrs.field(factory=EventRateLimiter)
    _written: set[tuple[str, int]] = attrs.field(factory=set)
    _catalog: PackageCatalog = attrs.field(factory=PackageCatalog)
    _io_limiter: anyio.CapacityLimiter = attrs.field(factory=lambda: anyio.CapacityLimiter(4))
    _base_env: Mapping[str, str] | None = None
    _targets: dict[HandlerName, HandlerTarget] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.view = LiveView(
            view_path=self.store.view_path, plugins=self.plugins, records=lambda: self._records
        )

    def instance_view(self) -> InstanceView:
        return self.view.instance_view()

    async def _io(self, func: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """Run file work that may take long (extraction, tree removal, scans) in a worker
        thread, a few at a time.

        The small writes and reads of a step (settings, HandlerState, a status file, the
        view) run on the event loop instead: each is a few syscalls, and handing it to a
        thread costs more in interpreter-lock handoffs than the work itself (1,000
        in-process extensions took twice as long that way).
        """
        return await anyio.to_thread.run_sync(func, *args, limiter=self._io_limiter)

    # -- apply ------------------------------------------------------------------------------

    async def apply(self, goal: GoalState) -> InstanceView:
        """Converge the state dir to `goal`; returns the final instance view."""
        store = self.store
        self._records = await self._io(store.load_records)
        sources = RepositorySet([self.inprocess, *self.repositories.sources])
        self._catalog = await sources.catalog(skip_unlistable=True)
        self.check_goal(goal)  # a goal that cannot be carried out changes nothing
        for problem in self._catalog.problems:
            store.log(problem)
        self._limiter = anyio.Semaphore(max(1, self.options.concurrency), fast_acquire=True)
        if store.needs_sweep:  # the last runtime was killed: its temp files may remain
            await self._io(store.sweep)
        # Commands a killed runtime left running end before their steps run again.
        orphans = functools.partial(end_orphans, boot_id_path=self.options.boot_id_path)
        for line in await self._io(orphans, store.running_dir, self.options.kill_grace):
            store.log(line)
        self.view.goal_id = goal.id
        self._written = set()
        self._base_env = base_environment()  # what every command of this apply starts from
        boot_id = read_boot_id(self.options.boot_id_path) or "unknown"
        key = await self._io(store.digest_key)
        self.view.extensions = {e.name: ExtensionState(goal=e) for e in goal.extensions}
        by_handler: dict[HandlerName, list[ExtensionGoal]] = {}
        for ext in goal.extensions:
            by_handler.setdefault(ext.handler, []).append(ext)

        targets: dict[HandlerName, HandlerTarget] = {}
        for handler, exts in by_handler.items():
            target = await self._target(handler, exts, boot_id, key)
            if target is not None:
                targets[handler] = target
        for handler in self._records:
            if handler not in by_handler:
                targets[handler] = HandlerTarget(handler=handler, version=None, boot_id=boot_id)
        self._targets = targets
        self._refresh_statuses()

        try:
            await _unwrap_state_dir_error(self._converge(targets, by_handler))
        except anyio.get_cancelled_exc_class():
            # Stopped from outside (a signal, the host's cancel scope): what finished is in
            # the journal; the view says so, and shows interrupted steps transitioning.
            with anyio.CancelScope(shield=True):
                store.log("apply interrupted: the steps that did not finish run at the next apply")
                with contextlib.suppress(OSError):  # a full disk must not hide the interrupt
                    await self.view.publish(durable=True)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._io(store.empty_trash)
        return self.instance_view()

    def check_goal(self, goal: GoalState) -> None:
        """Refuse a goal state that cannot be carried out as written (GoalStateError),
        before anything is changed: two extensions on a handler that takes one."""
        from ._checks import shared_handlers, single_config_problems

        if not shared_handlers(goal):
            return

        def installed(handler: HandlerName) -> list[Version]:
            return installed_versions(self._records.get(handler))

        problems = single_config_problems(goal, self._catalog, self._goal_manifest, installed)
        if problems:
            raise GoalStateError(problems)

    def _goal_manifest(self, handler: HandlerName, version: Version) -> HandlerManifest | None:
        """What `handler` at `version` says of itself before it is fetched, if that is known:
        its installed dir's manifest, its in-process class, or its local package file."""
        from ._checks import package_manifest

        if version in installed_versions(self._records.get(handler)):
            manifest = self._manifest(handler, version)
            if manifest is not None:
                return manifest
        handler_class = self.inprocess.handler_class(handler, version)
        if handler_class is not None:
            return class_manifest(handler_class)
        return package_manifest(self._catalog, handler, version)

    async def _converge(
        self,
        targets: Mapping[HandlerName, HandlerTarget],
        by_handler: Mapping[HandlerName, list[ExtensionGoal]],
    ) -> None:
        """Drive every handler to its target (removals first), then publish the view."""
        done = {handler: anyio.Event() for handler in targets}
        async with anyio.create_task_group() as group:
            group.start_soon(self.view.writer)
            async with anyio.create_task_group() as removals:
                for handler, target in targets.items():
                    if target.removes_handler:
                        removals.start_soon(self._drive_contained, target, done[handler])
            owners = self._owners(by_handler)
            async with anyio.create_task_group() as installs:
                for handler, target in targets.items():
                    if not target.removes_handler:
                        deps = self._dependencies(handler, by_handler, owners)
                        installs.start_soon(self._drive_after, target, deps, done)
            group.cancel_scope.cancel()
        self._deliver_events(await self._io(self._collect_all_events, list(targets)))
        await self.view.publish(durable=True)

    @staticmethod
    def _owners(by_handler: Mapping[HandlerName, list[ExtensionGoal]]) -> dict[str, HandlerName]:
        """Which handler each extension name (and each handler name) belongs to."""
        owners: dict[str, HandlerName] = {}
        for owner, exts in by_handler.items():
            owners[owner.key] = owner
            for ext in exts:
                owners[ext.name.lower()] = owner
        return owners

    @staticmethod
    def _dependencies(
        handler: HandlerName,
        by_handler: Mapping[HandlerName, list[ExtensionGoal]],
        owners: Mapping[str, HandlerName],
    ) -> list[tuple[str, HandlerName]]:
        deps: list[tuple[str, HandlerName]] = []
        for ext in by_handler[handler]:
            for name in ext.depends_on:
                found = owners.get(name.lower())
                if found is not None and found != handler:
                    deps.append((name, found))
        return deps

    async def _target(
        self, handler: HandlerName, exts: list[ExtensionGoal], boot_id: str, key: bytes
    ) -> HandlerTarget | None:
        """Resolve the version and number the settings; None (and an error) if impossible."""
        resolution = resolve_target(
            handler,
            exts,
            self._records.get(handler),
            self._catalog,
            boot_id=boot_id,
            key=key,
            token_of=package_token,
        )
        for name, code, message in resolution.failures:
            self.view.fail(name, code, message)
        for note in resolution.notes:
            self.store.log(note)
        if resolution.target is not None:
            for ext in resolution.target.extensions:
                self.view.extensions[ext.name].sequence_number = ext.sequence_number
        return resolution.target

    async def refresh(self) -> InstanceView:
        """Re-read every extension's status file and heartbeat, and collect telemetry.

        For a long-running agent between goal states: extensions keep reporting after
        their command returned.
        """
        # Threads compute, the loop decides: the files are read in a worker thread, and the
        # view changes and hook calls happen here.
        found = await self._io(self._read_statuses, True, None)
        self._show_statuses(found)
        self._deliver_events(await self._io(self._collect_all_events, list(self._records)))
        if self.view.dirty:
            await self.view.publish(durable=False)
        return self.instance_view()

    def _refresh_statuses(self, force: bool = False, handler: HandlerName | None = None) -> None:
        """Seed each extension's status from what is on disk and what the record remembers."""
        self._show_statuses(self._read_statuses(force, handler))

    def _show_statuses(
        self, found: list[tuple[ExtensionState, StatusReport | None, CommandFailure | None]]
    ) -> None:
        for state, report, failure in found:
            self._set_status(state, report, failure, ran_ok=True, operation=None)

    def _read_statuses(
        self, force: bool, handler: HandlerName | None
    ) -> list[tuple[ExtensionState, StatusReport | None, CommandFailure | None]]:
        """What each extension's status file and record say now (reads only: it may run in
        a worker thread; `_show_statuses` applies the result on the event loop)."""
        found: list[tuple[ExtensionState, StatusReport | None, CommandFailure | None]] = []
        for state in self.view.extensions.values():
            if (state.statuses and not force) or handler not in (None, state.goal.handler):
                continue
            record = self._records.get(state.goal.handler)
            if record is None or record.version is None or state.sequence_number is None:
                continue
            multi = self._is_multi(record.handler, record.version)
            report = self._read_report(record, state, multi)
            error = record.last_errors.get(state.goal.name) or record.last_errors.get("")
            failure = (
                None
                if error is None
                else CommandFailure(
                    operation=Operation.ENABLE, code=error[0], description=error[1], excerpt=""
                )
            )
            if report is None and failure is None:
                ext = record.extension(state.goal.name)
                if ext is None or not self._at_target(record.handler, ext) or state.statuses:
                    # Converged for an earlier target (new settings, say): its command has
                    # yet to run, and nothing has succeeded for this one.
                    continue
            found.append((state, report, failure))
        return found

    def _at_target(self, handler: HandlerName, ext: ExtensionRecord) -> bool:
        """Whether the extension's last carried-through target is the one of this pass."""
        target = self._targets.get(handler)
        if target is None or ext.converged is None:
            return False
        wanted = next((e for e in target.extensions if e.name == ext.name), None)
        return wanted is not None and ext.converged == target.fingerprint(wanted)

    def _read_report(
        self, record: HandlerRecord, state: ExtensionState, multi: bool
    ) -> StatusReport | None:
        assert record.version is not None
        assert state.sequence_number is not None
        directory = self.store.handler_dir(record.handler, record.version)
        name = status_file_name(state.goal.name if multi else None, state.sequence_number)
        return read_status_file(directory / STATUS_DIR / name)

    def _set_status(
        self,
        state: ExtensionState,
        report: StatusReport | None,
        failure: CommandFailure | None,
        *,
        ran_ok: bool,
        operation: Operation | None,
    ) -> None:
        shown = compose_status(report, failure, ran_ok=ran_ok, operation=operation, now=now())
        self.view.show(state, shown, self._heartbeat(state.goal.handler))

    def _heartbeat(self, handler: HandlerName) -> SubstatusView | None:
        """The heartbeat as a `Heartbeat` substatus, for handlers whose manifest asks for one."""
        record = self._records.get(handler)
        if record is None or record.version is None:
            return None
        manifest = self._manifest(handler, record.version)
        if manifest is None or not manifest.report_heartbeat:
            return None
        path = self.store.handler_dir(handler, record.version) / HEARTBEAT_NAME
        beat = read_heartbeat(path)
        if beat is None:
            return None
        level = {HeartbeatState.READY: "Info", HeartbeatState.NOT_READY: "Warning"}
        return SubstatusView(
            code=f"ComponentStatus/Heartbeat/{beat.state.value}",
            level=level.get(beat.state, "Error"),
            display_status=beat.state.value,
            message=beat.message,
        )

    # -- driving one handler ------------------------------------------------------------------

    async def _drive_after(
        self,
        target: HandlerTarget,
        deps: list[tuple[str, HandlerName]],
        done: Mapping[HandlerName, anyio.Event],
    ) -> None:
        for _, owner in deps:
            if owner in done:
                await done[owner].wait()
        for name, _ in deps:
            failure = await self._dependency_failure(name)
            if failure is not None:
                for ext in target.extensions:
                    self.view.fail(
                        ext.name,
                        ErrorCode.UNKNOWN,
                        f"skipped: extension {name!r} it depends on did not succeed: {failure}",
                    )
                done[target.handler].set()
                return
        await self._drive_contained(target, done[target.handler])

    async def _drive_contained(self, target: HandlerTarget, done: anyio.Event) -> None:
        """`_drive`, with an unexpected error stopping this handler only."""
        try:
            await self._drive(target, done)
        except StateDirError:
            raise  # the runtime's own files: the pass cannot go on (see apply)
        except OSError as exc:
            # The machine refused a write or a read of this handler's files (a full or
            # read-only disk, say): it stops where it is, as after a crash, and the step
            # runs again at the next pass; the others go on.
            what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            self.store.log(f"{target.handler}: stopped: {what}")
            for ext in target.extensions:
                self.view.fail(
                    ext.name, ErrorCode.UNKNOWN, f"stopped: {what}; it runs again next time"
                )
        except Exception as exc:  # one handler's fault must not end the pass
            # Something no step expected: this handler stops where it is, as after a
            # crash, and the others go on.
            self.store.log(
                f"{target.handler}: stopped by an unexpected error: {exc!r}\n"
                + "".join(traceback.format_exception(exc))
            )
            for ext in target.extensions:
                self.view.fail(ext.name, ErrorCode.UNKNOWN, f"internal error: {exc}")

    async def _dependency_failure(self, name: str) -> str | None:
        """Wait (within budget) for a dependency's terminal status; its failure, if any."""
        states = [
            s
            for s in self.view.extensions.values()
            if s.goal.name.lower() == name.lower() or s.goal.handler.key == name.lower()
        ]
        deadline = time.monotonic() + self.options.dependency_wait
        for state in states:
            if state.goal.state is not RequestedState.ENABLED:
                continue
            while state.level is StatusLevel.TRANSITIONING and time.monotonic() < deadline:
                await anyio.sleep(0.2)
                record = self._records.get(state.goal.handler)
                if record is None or record.version is None:
                    break
                multi = self._is_multi(record.handler, record.version)
                report = self._read_report(record, state, multi)
                if report is not None and report.status.terminal:
                    self._set_status(state, report, None, ran_ok=True, operation=None)
            if state.level is StatusLevel.ERROR:
                return state.statuses[0].message if state.statuses else "error"
            if state.level is StatusLevel.TRANSITIONING:
                return "it did not reach a terminal status in time"
        return None

    def _reconcile(self, record: HandlerRecord) -> HandlerRecord:
        """Make the record agree with the disk when a kill came between a delete and its record.

        A handler dir the record believes in may be gone (removed just before the kill): the
        record then forgets it, and the planner fetches again if the goal wants it.
        """
        upgrade = record.upgrade
        exists = self.store.handler_dir_exists
        if (
            upgrade is not None
            and upgrade.phase < UpgradePhase.OLD_UNINSTALLED
            and not exists(record.handler, upgrade.target)
        ):
            record = attrs.evolve(record, upgrade=None)
        if (
            record.version is not None
            and record.upgrade is None
            and not exists(record.handler, record.version)
        ):
            forgotten = tuple(
                attrs.evolve(e, enabled=False, converged=None) for e in record.extensions
            )
            record = HandlerRecord(handler=record.handler, extensions=forgotten)
        if record.version is not None:
            directory = self.store.handler_dir(record.handler, record.version)
            try:
                intact = (directory / HANDLER_ENVIRONMENT_NAME).stat().st_size > 0
            except FileNotFoundError:
                intact = False
            # Written without fsync, a power loss may have taken it. A directory that is
            # gone altogether (an upgrade killed right after removing the old version) is
            # the planner's business: its removal step simply completes.
            if not intact and directory.is_dir():
                self.store.prepare_handler_dir(record.handler, record.version)
        return record

    async def _drive(self, target: HandlerTarget, done: anyio.Event) -> None:
        handler = target.handler
        record = self._records.get(handler) or HandlerRecord(handler=handler)
        record = self._reconcile(record)  # a stat or two: not worth a thread
        limiter: anyio.Semaphore | None = None
        # The record whose HandlerState files wait for the next step (see below).
        unwritten: HandlerRecord | None = None
        try:
            while True:
                target = self._with_manifest_facts(record, target)
                step = next_step(record, target)
                if unwritten is not None and (step is None or step.kind is not StepKind.ENABLE):
                    self._write_protocol_state(unwritten)
                    unwritten = None
                if step is None:
                    if record.version is None and not target.removes_handler:
                        if record.failed == target.handler_fingerprint:
                            self.view.still_refused(record, target)
                        else:
                            self.view.not_installed(target)
                    if record.failed not in (None, target.handler_fingerprint):
                        # The goal moved past an old failure without needing a step: forget
                        # it, so that the failed goal is tried again if it ever comes back.
                        errors = {k: v for k, v in record.last_errors.items() if k}
                        record = attrs.evolve(
                            record, failed=None, failed_package=None, last_errors=errors
                        )
                        self._records[handler] = record
                        await self.store.save_record(record)
                        self._refresh_statuses(force=True, handler=handler)
                    break
                self.plugins.hook.exthandler_step_started(step=step)
                # A handler takes a slot for its first step and keeps it until the outcome
                # of its last is recorded: at most `concurrency` steps are ever in flight
                # (and may re-run after a crash), and a handler's steps run back to back,
                # so that extensions finish one after another instead of all at the end.
                if limiter is None:
                    assert self._limiter is not None
                    await self._limiter.acquire()
                    limiter = self._limiter
                began = time.monotonic()
                outcome, message, env = await self._execute(step, record, target)
                took = time.monotonic() - began
                record, go_on = advance(record, target, step, outcome)
                record = self._remember_error(record, step, outcome, message)
                self._records[handler] = record
                quick = outcome.ok and self._in_process(handler, step.version) is not None
                # Laying out an in-process handler's dir writes only files derived from its
                # class, and doing it again after a crash changes nothing anyone sees: its
                # record rides with the next step's (records are whole), sparing a flush.
                if not (quick and step.kind is StepKind.FETCH):
                    await self.store.save_record(record)
                # An in-process handler's Installed waits for the next step: the enable
                # that follows at once replaces it within milliseconds (and a replaced file
                # frees an inode, which on ext4 without a journal slows the creations after
                # it). No package command reads it in between; if the enable does not
                # finish, Installed is written when the handler's turn ends.
                if quick and step.kind is StepKind.INSTALL:
                    unwritten = record
                else:
                    self._write_protocol_state(record)
                    unwritten = None
                self.plugins.hook.exthandler_step_finished(
                    step=step,
                    ok=outcome.ok,
                    message=message,
                    result=StepResult.of(step, outcome, message, env=env, duration=took),
                )
                if not go_on:
                    break
        finally:
            try:
                if unwritten is not None:  # the enable that was to follow did not finish
                    self._write_protocol_state(unwritten)
            finally:
                if limiter is not None:
                    clear_marker(self._marker_path(handler))  # its commands left it empty
                    limiter.release()
                done.set()

    def _remember_error(
        self, record: HandlerRecord, step: Step, outcome: Outcome, message: str
    ) -> HandlerRecord:
        """Keep the last failure of each extension so that later views still show it."""
        errors = dict(record.last_errors)
        if step.kind in (StepKind.UPGRADE_DISABLED, StepKind.UPGRADE_INSTALL_SKIPPED):
            return record  # runs nothing, fails never
        key = step.extension or ""
        if outcome.ok:
            errors.pop(key, None)
            if step.kind in (StepKind.ENABLE, StepKind.FETCH, StepKind.INSTALL):
                errors.pop("", None)
        else:
            errors[key] = (outcome.code, message)
        return attrs.evolve(record, last_errors=errors)

    def _with_manifest_facts(self, record: HandlerRecord, target: HandlerTarget) -> HandlerTarget:
        if target.version is None:
            return target
        manifest = self._manifest(record.handler, target.version)
        if manifest is None or (
            target.update_with_install == manifest.update_with_install
            and target.continue_on_update_failure == manifest.continue_on_update_failure
            and target.multi_config == manifest.supports_multiple_extensions
        ):
            return target
        return attrs.evolve(
            target,
            update_with_install=manifest.update_with_install,
            continue_on_update_failure=manifest.continue_on_update_failure,
            multi_config=manifest.supports_multiple_extensions,
        )

    def _manifest(self, handler: HandlerName, version: Version) -> HandlerManifest | None:
        key = (handler, version)
        manifest = self._manifests.get(key)
        if manifest is None:
            path = self.store.handler_dir(handler, version) / MANIFEST_NAME
            try:
                manifest = read_manifest(path)  # no link, FIFO or huge file: see _fs
            except PackageError as exc:
                self._manifest_errors[key] = exc
                return None
            self._manifests[key] = manifest
            self._manifest_errors.pop(key, None)
        return manifest

    def _marker_path(self, handler: HandlerName) -> Path:
        """Where a running command of `handler` is named (see `run_command`)."""
        return self.store.running_dir / f"{handler.key}.json"

    def _in_process(self, handler: HandlerName, version: Version) -> str | None:
        """The class a handler dir was laid out for (`module:Class`), None for a package."""
        manifest = self._manifest(handler, version)
        return None if manifest is None else manifest.in_process

    def _is_multi(self, handler: HandlerName, version: Version) -> bool:
        manifest = self._manifest(handler, version)
        return manifest is not None and manifest.supports_multiple_extensions

    def _write_protocol_state(self, record: HandlerRecord) -> None:
        upgrade = record.upgrade
        if upgrade is not None and upgrade.failed:
            failed_dir = self.store.handler_dir(record.handler, upgrade.target)
            self.store.write_handler_state(failed_dir, HandlerState.FAILED_UPGRADE)
        if record.version is None:
            return
        directory = self.store.handler_dir(record.handler, record.version)
        self.store.write_handler_state(directory, record.state)
        if self._is_multi(record.handler, record.version):
            for ext in record.extensions:
                state = HandlerState.ENABLED if ext.enabled else record.state
                if state is HandlerState.ENABLED and not ext.enabled:
                    state = HandlerState.INSTALLED
                self.store.write_handler_state(directory, state, ext.name)

    # -- executing one step ------------------------------------------------------------------

    async def _execute(
        self, step: Step, record: HandlerRecord, target: HandlerTarget
    ) -> tuple[Outcome, str, Mapping[str, str]]:
        """How the step ended, and the protocol variables its command got (none: empty)."""
        kind = step.kind
        if kind is StepKind.FETCH:
            return (*await self._fetch(step, target), {})
        if kind is StepKind.REMOVE_DIR:
            self._manifests.pop((step.handler, step.version), None)
            # A rename (the files go at the end of the pass): not worth a thread.
            self.store.remove_handler_dir(step.handler, step.version)
            return Outcome(ok=True, exit_code=NOT_RUN), "", {}
        if kind is StepKind.COPY_STATE:
            assert step.source is not None
            await self._io(self._copy_state, step.handler, step.source, step.version)
            return Outcome(ok=True, exit_code=NOT_RUN), "", {}
        if kind is StepKind.CONVERGE:
            self._converged(step, target)
            return Outcome(ok=True, exit_code=NOT_RUN), "", {}
        if not kind.runs_command:  # an upgrade phase that needs no command
            return Outcome(ok=True, exit_code=NOT_RUN), "", {}
        return await self._command(step, record, target)

    def _converged(self, step: Step, target: HandlerTarget) -> None:
        name = step.extension
        if name is None or name not in self.view.extensions:
            return
        state = self.view.extensions[name]
        if not state.statuses or state.goal.state is RequestedState.DISABLED:
            record = self._records.get(step.handler)
            report = None
            if record is not None and record.version is not None:
                report = self._read_report(record, state, target.multi_config)
            self._set_status(state, report, None, ran_ok=True, operation=None)

    async def _fetch(self, step: Step, target: HandlerTarget) -> tuple[Outcome, str]:
        handler, version = step.handler, step.version
        directory = self.store.handler_dir(handler, version)
        try:
            ref = self._catalog.find(handler, version)
            if directory.exists():  # left by an interrupted run after extraction
                await self._io(shutil.rmtree, directory)
            source = self._catalog.source_of(ref) or self.repositories
            handler_class = self.inprocess.handler_class(handler, version)
            self._manifests.pop((handler, version), None)
            if source is self.inprocess and handler_class is not None:
                manifest = materialize(handler_class, directory)
            else:
                downloads = self.store.meta / "downloads"
                make_dir(downloads, 0o700)
                zip_path = await source.fetch(ref, downloads / ref.file_name)
                if zip_path.stat().st_size <= INLINE_LIMIT:
                    manifest = extract_package(zip_path, directory)
                else:
                    manifest = await self._io(extract_package, zip_path, directory)
                zip_path.unlink()  # usually a hard link into the repository: one syscall
            try:
                self.store.prepare_handler_dir(handler, version)
            except OSError as exc:  # e.g. a package holding a file named config or status
                raise PackageError(
                    ErrorCode.PACKAGE_EXTRACTION,
                    f"the handler dir cannot be laid out over the package: {exc}",
                ) from exc
        except (PackageError, NoEligibleVersionError, OSError) as exc:
            return self._fetch_failed(step, target, exc)
        self._manifests[(handler, version)] = manifest
        return Outcome(ok=True, exit_code=NOT_RUN), ""

    def _fetch_failed(
        self,
        step: Step,
        target: HandlerTarget,
        exc: PackageError | NoEligibleVersionError | OSError,
    ) -> tuple[Outcome, str]:
        """Report a fetch that failed, and take away whatever it left of the handler dir.

        A refusal of the package itself (no manifest, an unsafe archive, a digest that does
        not match) is remembered with the package's identity; a failure of the machine or
        of the download (a full disk, an I/O error, a missing file) is tried again at the
        next pass.
        """
        handler, version = step.handler, step.version
        self._manifests.pop((handler, version), None)
        with contextlib.suppress(OSError):  # the rename is all: its files go with the trash
            self.store.remove_handler_dir(handler, version)
        if isinstance(exc, OSError):
            code, transient = ErrorCode.PACKAGE_DOWNLOAD, True
            what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            message = f"{handler} {version}: cannot fetch the package: {what}"
        else:
            code = getattr(exc, "code", ErrorCode.PACKAGE_DOWNLOAD)
            # A version no repository offers any longer did not go through either.
            transient = not isinstance(exc, PackageError) or exc.transient
            message = f"{handler} {version}: {exc}"
        package = ""
        if not transient:
            with contextlib.suppress(NoEligibleVersionError):
                package = package_token(self._catalog.find(handler, version))
        for ext in target.extensions:
            self.view.fail(ext.name, code, message)
        outcome = Outcome(
            ok=False,
            exit_code=str(int(code)),
            code=int(code),
            transient=transient,
            package=package,
        )
        return outcome, message

    def _copy_state(self, handler: HandlerName, old: Version, new: Version) -> None:
        """Carry the old version's mrseq and status files into the new handler dir."""
        self.store.copy_state(handler, old, new)

    def _timeout(
        self,
        handler: HandlerName,
        operation: Operation,
        handler_class: type[Handler[Any, Any]] | None = None,
    ) -> float:
        """The runtime's override, else the handler's own (in process), else the default."""
        if self.options.command_timeout is not None:
            return self.options.command_timeout
        for name, value in self.options.handler_timeouts.items():
            if name.lower() == handler.key:
                return value
        if handler_class is not None and operation.value in handler_class.command_timeouts:
            return float(handler_class.command_timeouts[operation.value])
        return DEFAULT_TIMEOUTS[operation]

    async def _command(
        self, step: Step, record: HandlerRecord, target: HandlerTarget
    ) -> tuple[Outcome, str, Mapping[str, str]]:
        operation = _OPERATIONS[step.kind]
        handler = step.handler
        directory = self.store.handler_dir(handler, step.version)
        manifest = self._manifest(handler, step.version)
        multi = manifest is not None and manifest.supports_multiple_extensions
        names = [step.extension] if step.extension else [e.name for e in target.extensions]
        if not names:
            names = [e.name for e in record.extensions]
        affected = [self.view.extensions[n] for n in names if n in self.view.extensions]
        sequence = _sequence_for(step, record, target)
        self._write_settings(directory, target, names, multi)
        env = {
            Variable.SEQUENCE_NUMBER: str(sequence),
            Variable.EXTENSION_PATH: str(directory),
            Variable.EXTENSION_VERSION: str(step.version),
            Variable.SUPPORTED_FEATURES: SUPPORTED_FEATURES,
            **dict(step.env),
        }
        if multi and step.extension:
            env[Variable.EXTENSION_NAME] = step.extension
        if manifest is None:
            error = self._manifest_errors.get((handler, step.version))
            code = ErrorCode.MANIFEST_NOT_FOUND if error is None else error.code
            reason = f"{MANIFEST_NAME} is missing" if error is None else error.message
            message = f"{handler} {step.version}: {reason}"
            for state in affected:
                self.view.fail(state.goal.name, code, message)
            return Outcome(ok=False, exit_code=str(int(code)), code=int(code)), message, {}
        command = manifest.command(operation)
        if command is None:  # only updateCommand may be absent: nothing to run
            return Outcome(ok=True, exit_code=NOT_RUN), "", {}
        spec = manifest.in_process
        if spec is not None:
            handler_class = self.inprocess.handler_class(handler, step.version)
            if handler_class is None:
                # Its plugin is gone (uninstalled, or a version no longer registered): the
                # step cannot run; it is skipped so that removal and upgrades go on.
                warning = (
                    f"{handler} {step.version}: {spec} is no longer registered; skipped {operation}"
                )
                self.store.log(warning)
                return Outcome(ok=True, exit_code=NOT_RUN), warning, {}
            with self._on_interrupt(step, affected, f"{spec} {operation}", env):
                result = await run_inprocess(
                    handler_class,
                    handler_dir=directory,
                    operation=operation,
                    env=env,
                    timeout=self._timeout(handler, operation, handler_class),
                    log_file=self.store.command_log(handler),
                )
            self._report(step, record, affected, result, multi, target)
            return _outcome(result), "" if result.ok else result.describe(), env
        command_line = f"/bin/sh -c {directory}/{command.strip().lstrip('/')}"
        with self._on_interrupt(step, affected, command_line, env):
            result = await run_command(
                handler_dir=directory,
                command=command,
                operation=operation,
                env=env,
                timeout=self._timeout(handler, operation),
                grace=self.options.kill_grace,
                log_file=self.store.command_log(handler),
                marker=self._marker_path(handler),
                base_env=self._base_env,
                boot_id_path=self.options.boot_id_path,
            )
        self._report(step, record, affected, result, multi, target)
        if result.ok:
            return _outcome(result), "", env
        return _outcome(result), f"{result.describe()} {result.excerpt}".strip(), env

    @contextlib.contextmanager
    def _on_interrupt(
        self,
        step: Step,
        affected: Sequence[ExtensionState],
        command_line: str,
        env: Mapping[str, str],
    ) -> Iterator[None]:
        """If the command is cancelled (a signal, the host's cancel scope), say so in both
        logs and show its extensions transitioning: its outcome was never recorded, so it
        runs again at the next apply. The executor has ended its process group already."""
        started = datetime.now(UTC)
        try:
            yield
        except anyio.get_cancelled_exc_class():
            operation = _OPERATIONS[step.kind]
            note = f"{operation.value} was interrupted: the runtime was stopped while it ran"
            self.store.log(f"{step.describe()}: {note}; it runs again at the next apply")
            write_log_entry(
                self.store.command_log(step.handler),
                started=started,
                operation=operation,
                command_line=command_line,
                env=env,
                outcome="interrupted (the runtime was stopped); the process group was ended",
                duration=(datetime.now(UTC) - started).total_seconds(),
            )
            self.view.transitioning(affected, f"{note}; it runs again at the next apply")
            raise

    def _write_settings(
        self, directory: Path, target: HandlerTarget, names: Iterable[str], multi: bool
    ) -> None:
        for name in names:
            state = self.view.extensions.get(name)
            if state is None or state.sequence_number is None or state.goal.settings_error:
                continue
            file_name = settings_file_name(name if multi else None, state.sequence_number)
            path = directory / CONFIG_DIR / file_name
            key = (str(path), state.sequence_number)
            if key in self._written and path.exists():
                continue
            make_dir(path.parent, 0o700)  # a link the handler put there is replaced
            self._write_settings_file(path, state.goal)
            self._written.add(key)

    def _write_settings_file(self, path: Path, goal: ExtensionGoal) -> None:
        # Settings are derived from the goal and rewritten before any command that reads
        # them whenever they are missing, so they need no fsync of their own.
        if not goal.has_settings:
            write_unless_same(path, b"", mode=0o600)
            return
        protected: str | None = None
        thumbprint: str | None = None
        secret = goal.protected_settings
        if isinstance(secret, PlainProtectedSettings):
            # cryptography takes a while to import: only goal states with secrets need it.
            from ._crypto import encrypt_protected_settings, ensure_certificate

            if self._certificate is None:
                self._certificate = ensure_certificate(self.store.root)
            protected = encrypt_protected_settings(secret.value, self._certificate)
            thumbprint = self._certificate.thumbprint
        elif isinstance(secret, EncryptedProtectedSettings):
            protected, thumbprint = secret.data, secret.thumbprint
        data = render_settings(goal.public_settings, protected, thumbprint)
        write_unless_same(path, data, mode=0o600)

    def _report(
        self,
        step: Step,
        record: HandlerRecord,
        affected: Sequence[ExtensionState],
        result: CommandResult,
        multi: bool,
        target: HandlerTarget,
    ) -> None:
        operation = result.operation
        failure = None
        if not result.ok:
            code = (
                ErrorCode.COMMAND_TIMEOUT
                if result.timed_out
                else ErrorCode.for_operation(operation)
            )
            failure = CommandFailure(
                operation=operation,
                code=int(code),
                description=result.describe(),
                excerpt=result.excerpt,
            )
        directory = self.store.handler_dir(step.handler, step.version)
        for state in affected:
            if state.sequence_number is None:
                continue
            if result.ok and step.kind not in (StepKind.ENABLE, StepKind.DISABLE):
                continue  # install/update/uninstall success: the enable reports next
            name = status_file_name(state.goal.name if multi else None, state.sequence_number)
            report = read_status_file(directory / STATUS_DIR / name)
            self._set_status(state, report, failure, ran_ok=result.ok, operation=operation)

    def _collect_all_events(
        self, handlers: Sequence[HandlerName]
    ) -> list[tuple[HandlerName, list[TelemetryEvent]]]:
        """Every handler's new telemetry events (file work: run it in a worker thread)."""
        collected = []
        for handler in handlers:
            events_dir = self.store.events_dir(handler)
            if not events_dir.is_dir():
                continue
            events, problems = collect_events(
                events_dir, handler=str(handler), limiter=self._events
            )
            for problem in problems:
                self.store.log(f"{handler}: telemetry: {problem}")
            if events:
                collected.append((handler, events))
        return collected

    def _deliver_events(self, collected: list[tuple[HandlerName, list[TelemetryEvent]]]) -> None:
        """Hand collected events to the plugins (on the event loop)."""
        for handler, events in collected:
            self.plugins.hook.exthandler_telemetry_events(handler=str(handler), events=events)


async def _unwrap_state_dir_error(work: Awaitable[None]) -> None:
    """Await `work`; a StateDirError from one of its tasks comes out alone, not wrapped in
    an exception group, so that callers (the CLI) can name the path and exit 2."""
    try:
        await work
    except BaseExceptionGroup as group:
        found = _first_state_dir_error(group)
        if found is None:
            raise
        raise found from None


def _first_state_dir_error(group: BaseExceptionGroup[BaseException]) -> StateDirError | None:
    for exc in group.exceptions:
        if isinstance(exc, StateDirError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_state_dir_error(exc)
            if found is not None:
                return found
    return None


def _outcome(result: CommandResult) -> Outcome:
    if result.timed_out:
        return Outcome(ok=False, exit_code=str(int(ErrorCode.COMMAND_TIMEOUT)), code=1011)
    code = NOT_RUN if result.exit_code is None else str(result.exit_code)
    return Outcome(
        ok=result.ok,
        exit_code=code,
        code=0 if result.ok else ErrorCode.for_operation(result.operation),
    )


def _sequence_for(step: Step, record: HandlerRecord, target: HandlerTarget) -> int:
    names = [step.extension] if step.extension else [e.name for e in target.extensions]
    for ext in target.extensions:
        if ext.name in names:
            return ext.sequence_number
    for ext_record in record.extensions:
        if ext_record.name in names or not names:
            return ext_record.sequence_number
    return 0
