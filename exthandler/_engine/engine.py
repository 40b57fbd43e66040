"""The engine: converges a goal state into a state dir, one pass per `apply`.

A pass loads the records, takes a snapshot of what the sources offer, refuses a goal that
cannot be carried out (before any change), ends commands a killed runtime left running,
resolves each handler's target, and lets the scheduler drive every handler through the
driver. Everything a pass works with lives in its `Pass`; the parts are:

- `Scheduler` (scheduler.py): removals first, dependency waits, slots;
- `HandlerDriver` (driver.py): the planner loop of one handler, journalled;
- `StepRunner` (steps.py): fetch through a `PackageSource`, commands through an `Executor`;
- `Statuses` (statuses.py): status files and heartbeats into the live view;
- `LiveView` (_report/liveview.py): the view, its file and the plugins' hooks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple, Unpack

import anyio
import pluggy
from exthandler_sdk import ErrorCode, Operation, StatusLevel
from exthandler_sdk.procs import read_boot_id
from exthandler_sdk.protocol import COMMAND_TIMEOUTS

from .._errors import GoalStateError, StateDirError, state_dir_error_alone
from .._executors.base import Executor
from .._executors.inprocess import InProcessExecutor, InProcessHandlers, class_manifest
from .._executors.process import ProcessExecutor, base_environment, end_orphans
from .._fs import make_dir
from .._model import GoalState, HandlerName, RequestedState, Version
from .._packages.manifest import HandlerManifest
from .._packages.repository import PackageCatalog, PackageSource, RepositorySet, Workspace
from .._plan.course import PlannedStep, course
from .._plan.planner import HandlerRecord, HandlerTarget
from .._plan.targets import installed_versions, resolve_targets
from .._policy.policy import PolicyError, PolicyState, load_policy, refusals
from .._policy.signature import PackageVerifier
from .._report.liveview import ExtensionState, LiveView
from .._report.telemetry import Collected, EventRateLimiter, collect_all
from .._report.view import InstanceView
from .._state import quiet as quiet_stamp
from .._state.store import Store
from .._values import Value
from .driver import HandlerDriver
from .scheduler import Scheduler, Slot
from .settings import SettingsWriter
from .state import FACTS_FILE, Manifests, Pass
from .statuses import Statuses
from .steps import StepRunner

if TYPE_CHECKING:
    from .._packages.cache import PackageCache

__all__ = ["DEFAULT_TIMEOUTS", "Engine", "EngineOptions", "Plan"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

DEFAULT_TIMEOUTS: Mapping[Operation, float] = COMMAND_TIMEOUTS


class EngineOptions(Value):
    """The engine's share of `RuntimeConfig` (whose defaults these take)."""

    concurrency: int
    command_timeout: float | None
    handler_timeouts: Mapping[str, float]
    kill_grace: float
    dependency_wait: float
    boot_id_path: Path
    # The extension policy (docs/policy.md): the policy file, the roots signatures must
    # chain to, and whether extensions are processed at all.
    policy: Path | None = None
    trusted_roots: Sequence[Path] = ()
    extensions_enabled: bool = True
    extensions_switch: tuple[str, str] = ("extensions_enabled=True", "RuntimeConfig")


class Plan(Value):
    """What `apply` would do: its steps in order, and the extensions it could not serve."""

    goal_state_id: str | None
    steps: tuple[PlannedStep, ...]
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "goalStateId": self.goal_state_id,
            "steps": [step.to_json() for step in self.steps],
            "problems": list(self.problems),
        }


def _package_cache(store: Store) -> PackageCache:
    """The state dir's cache of downloaded packages (made when the first one is kept)."""
    from .._packages.cache import PackageCache

    return PackageCache(root=store.meta / "packages", state_root=store.root)


class Engine:
    """Owns one state dir (through `store`) and converges goal states into it.

    `sources` are the package sources after the in-process handlers (which come first);
    `executors` run commands before the in-process and process executors do.
    """

    store: Store
    sources: Sequence[PackageSource]
    options: EngineOptions
    plugins: pluggy.PluginManager
    inprocess: InProcessHandlers
    executors: Sequence[Executor]
    view: LiveView
    # The handler records, kept between passes (for `refresh`); every part shares this dict.
    _records: dict[HandlerName, HandlerRecord]
    _pass: Pass | None
    _io_limiter: anyio.CapacityLimiter
    _manifests: Manifests
    _statuses: Statuses
    _driver: HandlerDriver
    _events: EventRateLimiter
    verifier: PackageVerifier
    # The last pass and when it began, when it changed nothing (see `quiet_inputs`).
    _quiet_pass: tuple[Pass, int] | None

    def __init__(
        self,
        store: Store,
        sources: Sequence[PackageSource],
        options: EngineOptions,
        plugins: pluggy.PluginManager,
        inprocess: InProcessHandlers | None = None,
        executors: Sequence[Executor] = (),
    ) -> None:
        self.store = store
        self.sources = sources
        self.options = options
        self.plugins = plugins
        self.inprocess = InProcessHandlers() if inprocess is None else inprocess
        self.executors = executors
        self._records = {}
        self._pass = None
        self._events = EventRateLimiter()
        self._quiet_pass = None
        store, records = self.store, self._records
        self._io_limiter = store.io_limiter
        self.view = LiveView(
            view_path=store.view_path,
            plugins=self.plugins,
            records=lambda: records,
            limiter=store.io_limiter,
        )
        self._manifests = Manifests(store)
        self._statuses = Statuses(store, self.view, self._manifests, records, self._targets)
        hook = self.plugins.hook
        self.verifier = PackageVerifier(
            roots=tuple(self.options.trusted_roots),
            emit=lambda event: hook.exthandler_telemetry_events(
                handler=event.handler, events=[event]
            ),
            log=lambda line: store.log(line, level=logging.WARNING),
        )
        executors = [
            *self.executors,
            InProcessExecutor(self.inprocess),
            ProcessExecutor(grace=self.options.kill_grace, boot_id_path=self.options.boot_id_path),
        ]
        steps = StepRunner(
            store=store,
            view=self.view,
            statuses=self._statuses,
            manifests=self._manifests,
            executors=executors,
            settings=SettingsWriter(store.root),
            workspace=Workspace(store.downloads_dir, self._io_limiter, cache=_package_cache(store)),
            command_timeout=self.options.command_timeout,
            handler_timeouts=self.options.handler_timeouts,
            verifier=self.verifier,
        )
        self._driver = HandlerDriver(
            store, self.view, self._statuses, self._manifests, steps, self.plugins
        )

    def instance_view(self) -> InstanceView:
        return self.view.instance_view()

    def is_multi_config(self, handler: HandlerName, version: Version) -> bool:
        """Whether the installed `handler` at `version` takes several extensions."""
        return self._manifests.is_multi(handler, version)

    def policy_state(self) -> PolicyState:
        """What governs the next pass: processing on or off, and the policy file as it
        reads now (read at every pass: an administrator may change it while `run` runs)."""
        options = self.options
        if not options.extensions_enabled or options.policy is None:
            setting, where = options.extensions_switch
            return PolicyState(
                extensions_enabled=options.extensions_enabled,
                enable_setting=setting,
                enable_where=where,
            )
        try:
            return PolicyState(policy=load_policy(options.policy))
        except PolicyError as exc:
            for problem in exc.problems:
                self.store.log(f"policy: {problem}", level=logging.ERROR)
            return PolicyState(error=exc)

    def _targets(self) -> Mapping[HandlerName, HandlerTarget]:
        """The targets of the current (or last) pass."""
        return {} if self._pass is None else self._pass.targets

    async def _io(self, func: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """Run file work that may take long (scans, tree removal) in a worker thread, a few
        at a time. The small reads and writes of a step run on the event loop: each is a
        few syscalls, and handing it to a thread costs more than the work itself."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self._io_limiter)

    async def apply(self, goal: GoalState) -> InstanceView:
        """Converge the state dir to `goal`; returns the final instance view."""
        store = self.store
        self._quiet_pass = None
        quiet_stamp.discard(str(store.meta))  # before anything changes
        started_ns = time.time_ns()  # what handlers changed after this is not vouched for
        logged = store.logged
        swept = store.needs_sweep
        loaded = await self._io(store.load_records)
        self._records.clear()
        self._records.update(loaded)
        catalog = await self._catalog(goal)
        boot_id = read_boot_id(self.options.boot_id_path) or "unknown"
        work = Pass(goal, self._records, catalog, boot_id, base_environment())
        work.policy = self.policy_state()
        self.check_goal(goal, work)  # a goal that cannot be carried out changes nothing
        for problem in catalog.problems:
            store.log(problem)
        for found in catalog.handler_problems.values():
            for problem in found:
                store.log(problem)
        if store.needs_sweep:  # the last runtime was killed: its temp files may remain
            await self._io(store.sweep)
        try:
            make_dir(store.downloads_dir, 0o700)  # the package sources' workspace
        except OSError as exc:
            raise StateDirError(
                f"{store.downloads_dir}: cannot be made: {exc.strerror or exc}"
            ) from exc
        # Commands a killed runtime left running end before their steps run again.
        orphans = functools.partial(end_orphans, boot_id_path=self.options.boot_id_path)
        for line in await self._io(orphans, store.running_dir, self.options.kill_grace):
            store.log(line)
        self._pass = work
        self.view.goal_id = goal.id
        self.view.extensions = {e.name: ExtensionState(goal=e) for e in goal.extensions}
        self.view.dirty = True  # the view file shows the new goal's extensions at once
        await self._resolve_targets(work, await self._io(store.digest_key))
        self._statuses.refresh()
        try:
            events = await state_dir_error_alone(self._converge(work))
            if not (work.changed or events or swept or store.logged != logged):
                self._quiet_pass = (work, started_ns)
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
            self._save_manifest_facts()
        return self.instance_view()

    def _save_manifest_facts(self) -> None:
        """Keep what the pass learned of the manifests (a small write, and only when it
        changed; a cache: one that cannot be written is read from the manifests again)."""
        try:
            self._manifests.save()
        except OSError as exc:
            self.store.log(f"manifest facts not kept: {exc.strerror or exc}")

    async def plan(self, goal: GoalState) -> Plan:
        """The steps `apply(goal)` would run, in order, each assumed to succeed, with the
        reason for each; nothing is run and nothing in the state dir changes."""
        records = await self._io(self.store.load_records)
        self.inprocess.load(records)
        catalog = await self._catalog(goal)
        boot_id = read_boot_id(self.options.boot_id_path) or "unknown"
        work = Pass(goal, records, catalog, boot_id, {})
        work.policy = self.policy_state()
        self.check_goal(goal, work)
        targets, found = resolve_targets(
            work.by_handler,
            records,
            catalog,
            boot_id=boot_id,
            key=await self._io(self.store.digest_key),
            token_of=work.package_token,
            refused=refusals(work.policy, goal.extensions),
            blocked=work.policy.blocks,
        )
        steps: list[PlannedStep] = []
        removals = [t for t in targets.values() if t.removes_handler]
        for target in [*removals, *(t for t in targets.values() if not t.removes_handler)]:
            record = records.get(target.handler)
            if record is not None and target.version is not None:
                target = self._driver.with_manifest_facts(record, target)
            after = tuple(
                name for ext in work.by_handler.get(target.handler, ()) for name in ext.depends_on
            )
            steps += course(record, target, after=after)
        problems = tuple(f"{name}: {message} ({code})" for name, code, message in found.failures)
        return Plan(goal_state_id=goal.id, steps=tuple(steps), problems=problems)

    async def _catalog(self, goal: GoalState) -> PackageCatalog:
        """What the sources offer for one pass; handlers whose goal names package locations
        get their versions from their artifact manifests instead.

        The in-process classes plugins name (`exthandler_handler_paths`) are imported for
        the handlers the goal or the records name, and only for those."""
        self.inprocess.load([*(ext.handler for ext in goal.extensions), *self._records])
        for problem in self.inprocess.problems:
            self.store.log(problem, level=logging.ERROR)
        self.inprocess.problems.clear()
        sources = [self.inprocess, *self.sources]
        if any(ext.package_locations for ext in goal.extensions):
            from .._packages.remote import goal_catalog

            return await goal_catalog(goal, sources)
        return await RepositorySet(sources).catalog(skip_unlistable=True)

    def check_goal(self, goal: GoalState, work: Pass) -> None:
        """Refuse a goal state that cannot be carried out as written (GoalStateError),
        before anything is changed: two extensions on a handler that takes one."""
        from .._plan.checks import package_manifest, shared_handlers, single_config_problems

        if work.policy.error is not None or not work.policy.extensions_enabled:
            return  # nothing of the goal is processed
        if work.policy.policy is not None:  # nothing of a disallowed handler is fetched
            allowed = tuple(e for e in goal.extensions if not work.policy.blocks(e.handler))
            goal = goal.replace(extensions=allowed)
        if not shared_handlers(goal):
            return

        def installed(handler: HandlerName) -> list[Version]:
            return installed_versions(self._records.get(handler))

        def manifest_of(handler: HandlerName, version: Version) -> HandlerManifest | None:
            if version in installed(handler):
                manifest = self._manifests.get(handler, version)
                if manifest is not None:
                    return manifest
            handler_class = self.inprocess.handler_class(handler, version)
            if handler_class is not None:
                return class_manifest(handler_class)
            return package_manifest(work.catalog, handler, version)

        problems = single_config_problems(goal, work.catalog, manifest_of, installed)
        if problems:
            raise GoalStateError(problems)

    async def _resolve_targets(self, work: Pass, key: bytes) -> None:
        """Each handler's target (see `resolve_targets`); a handler without one fails."""
        work.targets, found = resolve_targets(
            work.by_handler,
            self._records,
            work.catalog,
            boot_id=work.boot_id,
            key=key,
            token_of=work.package_token,
            refused=refusals(work.policy, work.goal.extensions),
            blocked=work.policy.blocks,
        )
        for name, code, message in found.failures:
            self.view.fail(name, code, message)
        for note in found.notes:
            self.store.log(note)
        for target in work.targets.values():
            for ext in target.extensions:
                self.view.extensions[ext.name].sequence_number = ext.sequence_number

    async def _converge(self, work: Pass) -> int:
        """Drive every handler to its target, then collect telemetry and publish the view;
        the number of events collected."""

        async def drive(target: HandlerTarget, slot: Slot) -> None:
            await self._driver.drive(target, slot, work)

        async def blocker(name: str) -> str | None:
            return await self._statuses.dependency_failure(name, self.options.dependency_wait)

        async with anyio.create_task_group() as group:
            group.start_soon(self.view.writer)
            await Scheduler(self.options.concurrency).run(
                work.targets,
                work.by_handler,
                drive=drive,
                blocker=blocker,
                skip=self._skip,
                settled=lambda target: self._driver.settled(target, work),
            )
            group.cancel_scope.cancel()
        events = await self._telemetry(list(work.targets))
        await self.view.publish(durable=True)
        return events

    def quiet_inputs(self) -> quiet_stamp.Inputs | None:
        """What the last pass read, if it changed nothing: the inputs of its quiet-pass
        stamp (see _state/quiet.py). Worked out only when asked for (right after the pass,
        by whoever keeps stamps); None after any other pass, or when the pass showed
        anything not read from a file (an error, a made-up time), served a handler in
        process, or read a source that is not a local directory."""
        if self._quiet_pass is None:
            return None
        work, started_ns = self._quiet_pass
        from exthandler_sdk.protocol import (
            HANDLER_ENVIRONMENT_NAME,
            HEARTBEAT_MAX_AGE,
            HEARTBEAT_NAME,
        )

        from .._packages.manifest import MANIFEST_NAME
        from .._packages.repository import DirectoryRepository

        if work.policy.error is not None or any(e.package_locations for e in work.goal.extensions):
            return None
        followed: list[str] = []
        for source in self.sources:
            if not isinstance(source, DirectoryRepository):
                return None  # what a remote or embedder's source offers has no stat
            followed.append(str(source.path.absolute()))
        if self.options.policy is not None:
            followed.append(str(Path(self.options.policy).absolute()))
        followed += [str(Path(root).absolute()) for root in self.options.trusted_roots]
        for state in self.view.extensions.values():
            if state.goal.state is RequestedState.UNINSTALL:
                continue  # not shown
            if not state.from_report or state.level is StatusLevel.ERROR:
                return None
        store = self.store
        journal = store.journal
        own = [
            str(store.root),
            str(store.log_root),
            str(journal.snapshot_path),
            str(journal.journal_path),
            str(store.view_path),
            str(store.meta / FACTS_FILE),
            str(store.meta / "digest.key"),
            str(store.running_dir),
            str(store.downloads_dir),
        ]
        handlers: list[str] = []
        valid_until: float | None = None
        for handler, target in work.targets.items():
            record = work.records.get(handler)
            if target.removes_handler:
                if record is not None and record.version is not None:
                    return None
                continue
            version = target.version
            if record is None or version is None or record.version != version:
                return None
            if self.inprocess.handler_class(handler, version) is not None:
                return None  # its code is the package: no file says when it changes
            facts = self._manifests.facts(handler, version)
            if facts is None:
                return None
            directory = store.handler_dir(handler, version)
            handlers += [f"{directory}/{MANIFEST_NAME}", f"{directory}/{HANDLER_ENVIRONMENT_NAME}"]
            for ext in target.extensions:
                shown = self.view.extensions.get(ext.name)
                if shown is not None and shown.sequence_number is not None:
                    handlers.append(str(self._statuses.status_path(record, shown)))
            if facts.heartbeat:
                beat = f"{directory}/{HEARTBEAT_NAME}"
                handlers.append(beat)
                with contextlib.suppress(OSError):
                    stale_at = os.stat(beat, follow_symlinks=False).st_mtime + HEARTBEAT_MAX_AGE
                    if stale_at > time.time():  # a stale one stays stale while unchanged
                        valid_until = (
                            stale_at if valid_until is None else min(valid_until, stale_at)
                        )
            handlers.append(str(store.events_dir(handler)))
        return quiet_stamp.Inputs(
            started_ns=started_ns,
            own=own,
            handlers=handlers,
            followed=followed,
            boot_id=work.boot_id,
            valid_until=valid_until,
        )

    def _skip(self, target: HandlerTarget, name: str, failure: str) -> None:
        for ext in target.extensions:
            self.view.fail(
                ext.name,
                ErrorCode.UNKNOWN,
                f"skipped: extension {name!r} it depends on did not succeed: {failure}",
            )

    async def refresh(self) -> InstanceView:
        """Re-read every extension's status file and heartbeat, and collect telemetry.

        For a long-running agent between goal states: extensions keep reporting after
        their command returned. Threads read; the view changes here, on the event loop.
        """
        self._statuses.show(await self._io(self._statuses.read, True, None))
        self._save_manifest_facts()
        await self._telemetry(list(self._records))
        if self.view.dirty:
            await self.view.publish(durable=False)
        return self.instance_view()

    async def _telemetry(self, handlers: Sequence[HandlerName]) -> int:
        """Collect the handlers' new events in a worker thread; log and hand them over here.
        The number of events collected."""
        folders = [(str(h), self.store.events_dir(h)) for h in handlers]
        collected: Collected = await self._io(
            functools.partial(collect_all, limiter=self._events), folders
        )
        for problem in collected.problems:
            self.store.log(problem)
        count = 0
        for handler, events in collected.events:
            count += len(events)
            self.plugins.hook.exthandler_telemetry_events(handler=handler, events=list(events))
        return count
