"""The runtime's public face: `RuntimeConfig`, `open_runtime` and `Runtime`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exthandler_sdk.procs import BOOT_ID_PATH

from ._report.view import (
    AgentView,
    InstanceView,
    SourceView,
    read_instance_view,
    read_instance_view_data,
)
from ._values import Value

# The engine, the package sources, the plugins and the event loop are imported when a
# runtime is opened: reading the last instance view (`exthandler status`) needs none.
if TYPE_CHECKING:
    import anyio
    import pluggy
    from exthandler_sdk import Handler

    from ._engine import Engine, Plan
    from ._executors.base import Executor
    from ._goalstate._source import Pacing
    from ._model import GoalState, HandlerName, Version
    from ._packages.repository import PackageSource
    from ._policy.signature import CheckOutcome, PackageCheck
    from ._report.events import EventHub, EventStream
    from ._report.view import ExtensionView
    from ._upload.uploader import StatusUploader

__all__ = ["Runtime", "RuntimeConfig", "open_runtime", "read_instance_view"]


def _repositories(
    repositories: Sequence[str | Path | PackageSource],
) -> tuple[Path | PackageSource, ...]:
    """Paths made absolute (a directory of packages each); a URL (`s3://`, `https://`...)
    becomes a `RemoteRepository`; any other source kept as is."""
    from ._remote._url import is_url

    kept: list[Path | PackageSource] = []
    for repository in repositories:
        if isinstance(repository, str) and is_url(repository):
            from ._packages.remote import RemoteRepository

            kept.append(RemoteRepository(repository))
        elif isinstance(repository, str | Path):
            kept.append(Path(repository).absolute())
        elif callable(getattr(repository, "list_packages", None)) and callable(
            getattr(repository, "install", None)
        ):
            kept.append(repository)
        else:
            raise TypeError(
                f"repositories: {repository!r} is neither a path nor a PackageSource"
                " (an object with list_packages() and install())"
            )
    return tuple(kept)


def _path(path: str | Path) -> Path:
    # Absolute: commands run with the handler dir as cwd, so a relative path would break.
    return Path(path).absolute()


def _optional_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).absolute()


def _status_url(url: str | Path | None) -> str | None:
    """A status destination, checked (ValueError, without the URL's credentials): a path
    is made absolute."""
    if url is None:
        return None
    from ._upload.targets import destination

    found = destination(url)
    if found.kind == "file" and "://" not in str(url):
        return str(found.path)
    return str(url)


def _at_least(name: str, value: float, floor: float, *, strict: bool) -> None:
    if value < floor or (strict and value == floor):
        raise ValueError(f"{name}: must be {'>' if strict else '>='} {floor}, not {value!r}")


def _paths(paths: Sequence[str | Path]) -> tuple[Path, ...]:
    if isinstance(paths, str | Path):
        raise TypeError("trusted_roots: a sequence of paths, not one path")
    return tuple(Path(p).absolute() for p in paths)


class RuntimeConfig(Value):
    """Where a runtime keeps its state and finds its packages, and how it runs commands.

    `command_timeout` overrides every command's timeout; `handler_timeouts` overrides them
    per handler (`Publisher.Type` -> seconds). `plugins` are registered on the plugin
    manager next to those found through the `exthandler` entry-point group (unless
    `load_entry_points` is false). `handlers` are SDK handler classes to run in process,
    besides those the plugins register through `exthandler_register_handlers`.
    `repositories` are directories of packages, URLs of such directories (file, http(s),
    s3, gs, az), or any `PackageSource`; `executors` run
    the commands of the handler dirs they accept, before the built-in ones (see `Executor`).
    `status_url` is where the aggregate status document is uploaded when the goal state
    names no status blob of its own: at most every `status_interval` seconds when it
    changes, and every `status_heartbeat` seconds in any case, each upload given
    `status_timeout` seconds (see docs/fleet.md).
    `policy` is an extension policy file, read at every pass; `trusted_roots` are the PEM
    certificates package signatures must chain to; `extensions_enabled=False` processes no
    extension at all (docs/policy.md), and `extensions_switch` is what turns it back on and
    where, as the message of every extension left unprocessed names them. `log_file` is the
    runtime's own log (default: `<state_dir>/exthandler.log`), rotated past `log_max_bytes`
    (0: never) keeping `log_backups` old files (docs/operating.md).
    """

    # Every field is set by `__init__`, whose signature holds the defaults.
    state_dir: Path
    repositories: Sequence[Path | PackageSource]
    log_root: Path | None
    concurrency: int
    command_timeout: float | None
    handler_timeouts: Mapping[str, float]
    kill_grace: float
    dependency_wait: float
    boot_id_path: Path
    plugins: Sequence[Any]
    load_entry_points: bool
    handlers: Sequence[type[Handler[Any, Any]]]
    executors: Sequence[Executor]
    status_url: str | None
    status_interval: float
    status_heartbeat: float
    status_timeout: float
    policy: Path | None
    trusted_roots: Sequence[Path]
    extensions_enabled: bool
    extensions_switch: tuple[str, str]
    log_file: Path | None
    log_max_bytes: int
    log_backups: int

    def __init__(
        self,
        *,
        state_dir: str | Path,
        repositories: Sequence[str | Path | PackageSource] = (),
        log_root: str | Path | None = None,
        concurrency: int = 8,
        command_timeout: float | None = None,
        handler_timeouts: Mapping[str, float] | None = None,
        kill_grace: float = 5.0,
        dependency_wait: float = 20 * 60.0,
        boot_id_path: Path = BOOT_ID_PATH,
        plugins: Sequence[Any] = (),
        load_entry_points: bool = True,
        handlers: Sequence[type[Handler[Any, Any]]] = (),
        executors: Sequence[Executor] = (),
        status_url: str | Path | None = None,
        status_interval: float = 10.0,
        status_heartbeat: float = 60.0,
        status_timeout: float = 30.0,
        policy: str | Path | None = None,
        trusted_roots: Sequence[str | Path] = (),
        extensions_enabled: bool = True,
        extensions_switch: tuple[str, str] = ("extensions_enabled=True", "RuntimeConfig"),
        log_file: str | Path | None = None,
        log_max_bytes: int = 10 << 20,
        log_backups: int = 5,
    ) -> None:
        _at_least("status_interval", status_interval, 0, strict=False)
        _at_least("status_heartbeat", status_heartbeat, 0, strict=True)
        _at_least("status_timeout", status_timeout, 0, strict=True)
        self.__value_init__(
            state_dir=_path(state_dir),
            repositories=_repositories(repositories),
            log_root=_optional_path(log_root),
            concurrency=concurrency,
            command_timeout=command_timeout,
            handler_timeouts={} if handler_timeouts is None else handler_timeouts,
            kill_grace=kill_grace,
            dependency_wait=dependency_wait,
            boot_id_path=boot_id_path,
            plugins=plugins,
            load_entry_points=load_entry_points,
            handlers=handlers,
            executors=executors,
            status_url=_status_url(status_url),
            status_interval=status_interval,
            status_heartbeat=status_heartbeat,
            status_timeout=status_timeout,
            policy=_optional_path(policy),
            trusted_roots=_paths(trusted_roots),
            extensions_enabled=extensions_enabled,
            extensions_switch=extensions_switch,
            log_file=_optional_path(log_file),
            log_max_bytes=log_max_bytes,
            log_backups=log_backups,
        )

    def sources(self) -> list[PackageSource]:
        """The package sources, in order (a path is a `DirectoryRepository`)."""
        from ._packages.repository import DirectoryRepository

        return [DirectoryRepository(r) if isinstance(r, Path) else r for r in self.repositories]


def _new_lock() -> anyio.Lock:
    import anyio

    return anyio.Lock()


def _new_hub() -> EventHub:
    from ._report.events import EventHub

    return EventHub()


class Runtime:
    """A runtime holding its state dir; build it with `open_runtime`."""

    config: RuntimeConfig
    plugin_manager: pluggy.PluginManager
    _engine: Engine
    _lock: anyio.Lock
    _hub: EventHub
    _relay: object | None
    _uploader: StatusUploader | None

    def __init__(
        self,
        config: RuntimeConfig,
        plugin_manager: pluggy.PluginManager,
        engine: Engine,
        *,
        uploader: StatusUploader | None = None,
    ) -> None:
        self.config = config
        self.plugin_manager = plugin_manager
        self._engine = engine
        self._lock = _new_lock()
        self._hub = _new_hub()
        self._hub.on_change = self._listen
        self._relay = None
        self._uploader = uploader

    def _listen(self, on: bool) -> None:
        """Relay the hooks to the streams while one is open (building each extension's
        view for every change costs: nobody pays for it unless somebody listens)."""
        from ._report.events import Relay

        if on and self._relay is None:
            self._relay = Relay(self._hub)
            self.plugin_manager.register(self._relay, name="exthandler-events")
        elif not on and self._relay is not None:
            self.plugin_manager.unregister(self._relay)
            self._relay = None

    def events(self, *, limit: int = 1000) -> EventStream:
        """A stream of what the runtime does from now on, until it is closed.

        Iterate it from a task of your own (`async for event in stream`); close it with
        `stream.close()` or by using it as an async context manager. Events are
        `PassStarted`, `StepStarted`, `StepFinished`, `ExtensionChanged` and
        `PassFinished`; the runtime never waits for a consumer: a stream keeps at most
        `limit` events, drops the oldest beyond that, and says so with `EventsDropped`.
        """
        return self._hub.open(limit)

    async def plan(self, goal: GoalState) -> Plan:
        """The steps `apply(goal)` would run, in order, with the reason for each, assuming
        each succeeds; nothing runs and the state dir does not change. A goal that cannot
        be carried out raises GoalStateError, as `apply` would."""
        async with self._lock:
            return await self._engine.plan(goal)

    async def apply(self, goal: GoalState) -> InstanceView:
        """Converge to `goal` (one apply at a time) and return the final instance view."""
        async with self._lock:
            uploader = self._uploader
            if uploader is None:
                return await self._apply(goal)
            from ._errors import GoalStateError

            uploader.goal_started(goal)
            try:
                view = await self._apply(goal)
            except GoalStateError as exc:
                uploader.goal_refused(goal, "; ".join(exc.problems))
                raise
            uploader.goal_finished(goal)
            return view

    async def _apply(self, goal: GoalState) -> InstanceView:
        if not self._hub.listening:
            return await self._engine.apply(goal)
        return await self._apply_observed(goal)

    async def _apply_observed(self, goal: GoalState) -> InstanceView:
        """`apply`, with the pass's start and end told to the event streams."""
        from ._report.events import PassFinished, PassStarted, StepCounter

        hub = self._hub
        hub.publish(PassStarted(goal_state_id=goal.id, extensions=len(goal.extensions)))
        started = time.monotonic()
        counter = StepCounter()
        self.plugin_manager.register(counter)
        view: InstanceView | None = None
        try:
            view = await self._engine.apply(goal)
            return view
        finally:
            self.plugin_manager.unregister(counter)
            shown = view or self._engine.instance_view()
            failed = shown.failed()
            hub.publish(
                PassFinished(
                    goal_state_id=goal.id,
                    view=shown,
                    duration=time.monotonic() - started,
                    commands=counter.commands,
                    failed=failed,
                    cancelled=view is None,
                )
            )

    def register_handler(self, handler_class: type[Handler[Any, Any]]) -> None:
        """Run `handler_class` in process from now on; its version becomes available."""
        self._engine.inprocess.register(handler_class)

    # Hooks that hear of every pass: a plugin implementing one would miss the passes that
    # a quiet-pass stamp lets the command line skip.
    _PASS_OBSERVERS = (
        "exthandler_step_started",
        "exthandler_step_finished",
        "exthandler_extension_changed",
        "exthandler_instance_view_changed",
        "exthandler_telemetry_events",
    )

    def stamp_quiet_pass(
        self,
        goal: GoalState,
        *,
        key: str,
        goal_digest: str,
        listeners: Sequence[object] = (),
        followed: Sequence[str] = (),
    ) -> bool:
        """After `apply(goal)`: if that pass changed nothing and showed only what handlers
        reported, keep its stamp, so that `exthandler apply` of the same goal (`key`: its
        command line; `goal_digest`: the goal file's) can show the view again without a
        pass while nothing the pass read changes (docs/runtime.md, "Quiet passes").
        `listeners` are the caller's own plugins, which know that passes may be skipped;
        `followed` are more paths the caller depends on. Whether a stamp was kept."""
        from ._state import quiet

        inputs = self._engine.quiet_inputs()
        if inputs is None or self.config.status_url or goal.status_upload_blob is not None:
            return False  # nothing to vouch for, or every pass uploads the status
        manager = self.plugin_manager
        allowed = [*listeners, self._uploader]
        for name in self._PASS_OBSERVERS:
            for impl in getattr(manager.hook, name).get_hookimpls():
                if not any(impl.plugin is plugin for plugin in allowed):
                    return False  # somebody else hears of every pass
        store = self._engine.store
        try:
            why_not = quiet.write(
                str(store.root),
                str(store.meta),
                key=key,
                goal=goal_digest,
                boot_id_path=str(self.config.boot_id_path),
                inputs=inputs,
                followed=followed,
            )
        except OSError:  # a cache: without it the next pass is a whole one
            return False
        return why_not is None

    def instance_view(self) -> InstanceView:
        """The live instance view: current even while an apply is running."""
        return self._engine.instance_view()

    async def run(
        self,
        source: str | Path,
        *,
        interval: float = 5.0,
        notify: Callable[[str], None] | None = None,
        pacing: Pacing | None = None,
        looked: Callable[[], None] | None = None,
        applied: Callable[[GoalState], None] | None = None,
    ) -> None:
        """Converge to the goal state at `source` whenever it changes, until cancelled.

        `source` is a goal-state file, a directory of them (see `SourceWatcher`: the file
        whose content changed last), or a URL (`http(s)://`, `s3://`, `gs://`, `az://`, an
        Azure Blob URL with a SAS) read with conditional requests. It is looked at every
        `interval` seconds, with jitter; a new goal state is applied, an invalid one
        reported (the last good one stays), and in between the view is refreshed, since
        extensions keep reporting after their commands returned. A source that cannot be
        read is retried with exponential backoff and never stops the loop; its health is
        the instance view's `source` key. A pass whose packages or manifests could not be
        downloaded (1001, 1004) is run again at the next look. `notify` gets one line per
        goal state applied or refused and per change of the source's health (the
        runtime's log gets them too). `pacing` replaces the clock (see `Pacing`); `looked` is
        called after each look at `source`, before what it found is applied; `applied`
        with each goal state applied (not with one refused).
        """
        import attrs as _attrs

        from ._errors import GoalStateError
        from ._goalstate import parse_goal_state
        from ._goalstate._source import Pacing, SourceError, SourcePoller

        def say(line: str) -> None:
            self._engine.store.log(f"run: {line}")
            if notify is not None:
                notify(line)

        pacing = _attrs.evolve(pacing, interval=interval) if pacing else Pacing(interval=interval)
        poller = SourcePoller(source, pacing)
        current: GoalState | None = None
        # A pass that could not download a package runs again after 1, 2, 4 ... 64 looks.
        retry_every, retry_in = 0, 0
        while True:
            health = poller.health
            try:
                found = await poller.poll()
            except SourceError as exc:
                if poller.failed(exc.message):
                    say(f"goal-state source unreachable: {exc.message} (keeping the last one)")
                found = None
            else:
                if health.status == "Unreachable":
                    say(f"goal-state source reachable again: {poller.health.location}")
                poller.answered()
            if looked is not None:
                looked()
            goal: GoalState | None = None
            if found is not None:
                name, data = found
                try:
                    goal = parse_goal_state(data, source=name)
                except GoalStateError as exc:
                    poller.invalid("; ".join(exc.problems))
                    for problem in exc.problems:
                        say(f"{name}: {problem}")
            elif retry_every and current is not None:
                retry_in -= 1
                if retry_in <= 0:
                    goal = current
            if goal is not None:
                again = goal is current
                try:
                    view = await self.apply(goal)
                except GoalStateError as exc:  # cannot be carried out: nothing was changed
                    poller.invalid("; ".join(exc.problems))
                    self._show_source(poller.health)
                    for problem in exc.problems:
                        say(f"{poller.health.location}: {problem}")
                    await self.refresh()
                    await pacing.sleep(poller.delay())
                    continue
                failed = bool(view.failed())
                # Said as soon as the pass ends: a reload may stop the loop at its next wait.
                say(
                    f"applied {view.goal_state_id}: {len(view.extensions)} extension(s),"
                    f" {'with errors' if failed else 'ok'}"
                )
                poller.applied()
                self._show_source(poller.health)
                current = goal
                if applied is not None:
                    applied(goal)
                if not _download_failed(view):
                    retry_every = 0
                else:
                    retry_every = min(retry_every * 2, 64) if again else 1
                    retry_in = retry_every
                await self.refresh()
            else:
                self._show_source(poller.health)
                if current is not None or self._engine.view.dirty:
                    await self.refresh()
            await pacing.sleep(poller.delay())

    def _show_source(self, health: SourceView) -> None:
        view = self._engine.view
        if view.source != health:
            view.source = health
            view.dirty = True

    def show_agent(self, agent: AgentView) -> None:
        """Show the agent's own version and self-update in the instance view (its `agent`
        key) and in the uploaded status document (`guestAgentStatus`)."""
        view = self._engine.view
        if view.agent != agent:
            view.agent = agent
            view.dirty = True
            if self._uploader is not None:
                self._uploader.changed()

    @contextlib.asynccontextmanager
    async def between_passes(self) -> AsyncIterator[None]:
        """Hold the runtime between two passes: wait for a running apply or refresh to
        end, and keep the next from starting until the block exits (a reload's moment)."""
        async with self._lock:
            yield

    def log(self, line: str) -> None:
        """A line in the runtime's log (exthandler.log) and the stdlib logger `exthandler`."""
        self._engine.store.log(line)

    def package_check(
        self, handler: HandlerName, version: Version
    ) -> tuple[PackageCheck, CheckOutcome, bool]:
        """How a package of `handler` at `version` that is not an extension's (an agent
        version's) is checked before it is extracted, under the policy as it reads now: the
        check to give its `Workspace`, the outcome the check fills in, and whether the
        policy requires a signature (then an unsigned package is refused)."""
        from ._policy.signature import CheckOutcome, SignatureCheck

        engine = self._engine
        required = engine.policy_state().requires_signature(handler)
        check = SignatureCheck(
            handler=handler, version=version, encoded_signature=None, required=required
        )
        outcome = CheckOutcome()
        return engine.verifier.bind(check, outcome), outcome, required

    async def refresh(self) -> InstanceView:
        """Re-read status files and heartbeats, collect telemetry; the updated view."""
        async with self._lock:
            return await self._engine.refresh()


@contextlib.asynccontextmanager
async def open_runtime(config: RuntimeConfig) -> AsyncIterator[Runtime]:
    """Take the state dir (StateDirLockedError if another runtime holds it) and yield a runtime."""
    import anyio

    from ._engine import Engine, EngineOptions
    from ._plugins import make_plugin_manager
    from ._state.store import Store

    log_root = config.log_root or config.state_dir / "log"
    store = Store(
        root=config.state_dir,
        log_root=log_root,
        log_file=config.log_file,
        log_max_bytes=config.log_max_bytes,
        log_backups=config.log_backups,
    )
    await anyio.to_thread.run_sync(store.acquire)
    try:
        manager = make_plugin_manager(
            load_entry_points=config.load_entry_points, plugins=config.plugins
        )
        engine = Engine(
            store=store,
            sources=config.sources(),
            executors=config.executors,
            options=EngineOptions(
                concurrency=config.concurrency,
                command_timeout=config.command_timeout,
                handler_timeouts=config.handler_timeouts,
                kill_grace=config.kill_grace,
                dependency_wait=config.dependency_wait,
                boot_id_path=config.boot_id_path,
                policy=config.policy,
                trusted_roots=config.trusted_roots,
                extensions_enabled=config.extensions_enabled,
                extensions_switch=config.extensions_switch,
            ),
            plugins=manager,
        )
        engine.inprocess.register_all(config.handlers)
        engine.inprocess.register_plugins(manager.hook)
        previous = read_instance_view_data(config.state_dir)
        if previous is not None:
            engine.view.restore_data(previous)
        uploader = _status_uploader(config, engine, store)
        manager.register(uploader, name="exthandler-status-upload")
        runtime = Runtime(config=config, plugin_manager=manager, engine=engine, uploader=uploader)
        # The uploader runs beside everything else, for as long as the runtime is open; a
        # runtime left normally uploads the last status first. What ends the block is
        # raised again outside the task group, as it came (not in an exception group).
        ended: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(uploader.run)
            try:
                yield runtime
            except BaseException as exc:
                ended = exc
            else:
                await uploader.flush()
            group.cancel_scope.cancel()
        if ended is not None:
            raise ended
    finally:
        store.release()


def _download_failed(view: InstanceView) -> bool:
    """Whether a pass left an extension failed for want of its package or manifest."""
    codes = ("/1001", "/1004")
    return any(status.code.endswith(codes) for ext in view.extensions for status in ext.statuses)


def _status_uploader(config: RuntimeConfig, engine: Engine, store: Any) -> StatusUploader:
    from ._model import ExtensionGoal, HandlerName, Version
    from ._upload.uploader import StatusUploader

    def log(message: str, level: int) -> None:
        store.log(f"status upload: {message}", level=level)

    def is_multi(ext: ExtensionView, goal: ExtensionGoal | None) -> bool:
        if goal is not None and goal.multi_config is not None:
            return goal.multi_config
        try:
            handler, version = HandlerName.parse(ext.type), Version.parse(ext.type_handler_version)
        except ValueError:
            return False
        return engine.is_multi_config(handler, version)

    return StatusUploader(
        view=engine.instance_view,
        default_url=config.status_url,
        interval=config.status_interval,
        heartbeat=config.status_heartbeat,
        timeout=config.status_timeout,
        log=log,
        is_multi=is_multi,
    )
