"""The `exthandler` command line: parse arguments, call the public API, render results."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, cast

from .. import __version__
from .._errors import GoalStateError, PackageError, StateDirError, StateDirLockedError

# The runtime's modules are imported by the commands that use them: `--version` and
# `status` never pay for the event loop, the engine or the plugins.
if TYPE_CHECKING:
    from .._model import GoalState
    from .._report.view import InstanceView
    from .._runtime import Runtime, RuntimeConfig
    from .._service.notify import Notifier

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_LOCKED = 3

_T = TypeVar("_T")


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """`$EXTHANDLER_STATE_DIR`, else /var/lib/exthandler for root, else the XDG state dir."""
    env = os.environ if environ is None else environ
    if env.get("EXTHANDLER_STATE_DIR"):
        return Path(env["EXTHANDLER_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/exthandler")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "exthandler"


def _repo_entries(value: str) -> list[str]:
    """The colon-separated entries of `$EXTHANDLER_REPO`; a URL's own colons (after its
    scheme, before a port) do not separate entries."""
    from .._remote._url import split_search_path

    return split_search_path(value)


def _repository(entry: str) -> Path | str:
    """A `--repo` entry: a URL stays a string (a remote repository), a path is a Path."""
    from .._remote._url import is_url

    return entry if is_url(entry) else Path(entry)


def repositories(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> list[Path | str]:
    """`--repo` values in order, then the colon-separated entries of `$EXTHANDLER_REPO`
    (paths, or URLs kept as strings)."""
    env = os.environ if environ is None else environ
    extra = [_repository(p) for p in _repo_entries(env.get("EXTHANDLER_REPO", ""))]
    return [*(_repository(p) for p in args.repo or ()), *extra]


def _package_source(repository: Path | str) -> Any:
    """The package source for a `repositories()` entry."""
    if isinstance(repository, str):
        from .._packages.remote import RemoteRepository

        return RemoteRepository(repository)
    from .._packages.repository import DirectoryRepository

    return DirectoryRepository(repository)


def _missing_repositories(args: argparse.Namespace) -> list[str]:
    """One line for each named repository that does not exist (`--repo`, then
    `$EXTHANDLER_REPO`); a repository that is yet to be populated is empty, not missing."""
    from .._remote._url import is_url

    named = [("--repo", p) for p in args.repo or ()]
    named += [
        ("$EXTHANDLER_REPO entry", p) for p in _repo_entries(os.environ.get("EXTHANDLER_REPO", ""))
    ]
    return [
        f"{what} {path} does not exist"
        for what, path in named
        if path and not is_url(path) and not os.path.lexists(path)
    ]


def _warn_missing_repositories(args: argparse.Namespace) -> None:
    for line in _missing_repositories(args):
        print(f"exthandler: warning: {line}", file=sys.stderr)


def _problems(exc: GoalStateError, out: TextIO) -> int:
    for problem in exc.problems:
        out.write(f"{problem}\n")
    return EXIT_INVALID


def _cmd_validate(args: argparse.Namespace) -> int:
    import gc

    # The goal state makes no cycles: reference counts free it, and the collector's walks
    # over a large one would cost more than the parse. On again after (`main` may be
    # called in a process that goes on).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _validate(args)
    finally:
        if collecting:
            gc.enable()


def _validate(args: argparse.Namespace) -> int:
    from .._goalstate import load_goal_state
    from .._plan.checks import shared_handlers

    if args.goal is None and args.policy is None:
        args.parser.error("give GOAL, --policy FILE, or both")
    policy = None
    if args.policy is not None:
        from .._policy.policy import PolicyError, load_policy

        try:
            policy = load_policy(args.policy)
        except PolicyError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EXIT_INVALID
        print(
            f"{args.policy}: valid policy,"
            f" allowListedExtensionsOnly={str(policy.allow_listed_only).lower()},"
            f" signatureRequired={str(policy.signature_required).lower()},"
            f" {len(policy.extensions)} extension(s) named"
        )
    if args.goal is None:
        return EXIT_OK
    _warn_missing_repositories(args)
    try:
        goal = load_goal_state(args.goal)
        if shared_handlers(goal):  # else there is nothing to check: no event loop needed
            import anyio

            anyio.run(_check_handlers, goal, repositories(args))
    except GoalStateError as exc:
        return _problems(exc, sys.stderr)
    broken = [e for e in goal.extensions if e.settings_error]
    from .._remote._url import redact

    # One write for all the lines: a line per extension, each its own write when stdout
    # is unbuffered (PYTHONUNBUFFERED), cost more than the parse of a large goal state.
    lines = [
        f"{redact(args.goal)}: valid {goal.format} goal state {goal.id}, "
        f"{len(goal.extensions)} extension(s)\n"
    ]
    lines += [f"  {ext.name}: {ext.handler} {ext.version} {ext.state}\n" for ext in goal.extensions]
    lines += [
        f"  warning: {ext.name}: settings unusable, will be reported in error: "
        f"{ext.settings_error}\n"
        for ext in broken
    ]
    sys.stdout.write("".join(lines))
    if policy is not None:
        from .._policy.policy import PolicyState, refusals

        for name, (code, message) in refusals(PolicyState(policy=policy), goal.extensions).items():
            print(f"  warning: {name}: refused by the policy ({code}): {message}")
    return EXIT_OK


async def _check_handlers(goal: GoalState, repos: Sequence[Path | str]) -> None:
    """What `apply` checks before changing anything, with the handlers the repositories
    and the registered plugins offer (without repositories, only the plugins')."""
    from .._plan.checks import shared_handlers, single_config_problems

    if not shared_handlers(goal):
        return  # nothing to check: no plugin needs loading, no repository listing
    from .._executors.inprocess import InProcessHandlers
    from .._packages.repository import RepositorySet
    from .._plugins import make_plugin_manager

    inprocess = InProcessHandlers()
    inprocess.register_plugins(make_plugin_manager().hook)
    inprocess.load(ext.handler for ext in goal.extensions)
    sources = RepositorySet([inprocess, *(_package_source(p) for p in repos)])
    catalog = await sources.catalog(skip_unlistable=True)

    def manifest_of(handler: Any, version: Any) -> Any:
        from .._executors.inprocess import class_manifest
        from .._plan.checks import package_manifest

        handler_class = inprocess.handler_class(handler, version)
        if handler_class is not None:
            return class_manifest(handler_class)
        return package_manifest(catalog, handler, version)

    problems = single_config_problems(goal, catalog, manifest_of)
    if problems:
        raise GoalStateError(problems)


def _config(args: argparse.Namespace, plugins: Sequence[object] = ()) -> RuntimeConfig:
    from exthandler_sdk.procs import BOOT_ID_PATH

    from .._runtime import RuntimeConfig

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    return RuntimeConfig(
        state_dir=state_dir,
        repositories=repositories(args),
        log_root=Path(args.log_root) if getattr(args, "log_root", None) else None,
        concurrency=getattr(args, "concurrency", 8),
        command_timeout=getattr(args, "command_timeout", None),
        status_url=getattr(args, "status_url", None),
        policy=getattr(args, "policy", None) or os.environ.get("EXTHANDLER_POLICY") or None,
        trusted_roots=getattr(args, "trusted_root", None) or (),
        extensions_enabled=not getattr(args, "no_extensions", False),
        extensions_switch=getattr(args, "extensions_switch", None)
        or ("--no-extensions off", f"the exthandler {args.command} command line"),
        plugins=plugins,
        # Where the boot id comes from; containers and tests may point it elsewhere.
        boot_id_path=Path(os.environ.get("EXTHANDLER_BOOT_ID_FILE", str(BOOT_ID_PATH))),
    )


def _print_view(view: InstanceView, as_json: bool) -> None:
    from .._report.view import render_table

    if as_json:
        # Indented for a person at a terminal; one line for a program (json's C encoder
        # serves only unindented output, and a view may hold thousands of extensions).
        indent = 2 if sys.stdout.isatty() else None
        print(json.dumps(view.to_json(), indent=indent))
    else:
        print(render_table(view, width=_table_width()))
        source = view.source
        if source is not None:  # written by `run`: how its goal-state source fares
            since = f" since {source.since}" if source.since else ""
            why = f": {source.message}" if source.message else ""
            print(f"goal-state source {source.location}: {source.status}{since}{why}")
        agent = view.agent
        if agent is not None and agent.update is not None:  # written by `run` (self-update)
            update = agent.update
            print(
                f"agent {agent.version}: self-update {update.status}, expected"
                f" {update.expected_version}{f': {update.message}' if update.message else ''}"
            )


def _table_width() -> int | None:
    """The terminal's width (or `$COLUMNS`) for a table; None (a fixed width) for a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if not sys.stdout.isatty():
        return None
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


class _QuietApply:
    """`apply` of a goal state whose last pass here changed nothing, with nothing it read
    changed since: it shows the view file as that pass left it, without a pass (see
    `_state/quiet.py`). After a whole pass that changed nothing, `keep` stamps it."""

    def __init__(self, args: argparse.Namespace, data: bytes) -> None:
        import hashlib

        self.data = data
        self.goal = hashlib.sha256(data).hexdigest()
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        self.root = str(state_dir)
        self.meta = str(state_dir / ".exthandler")
        # Whatever of the command line and its environment could change the pass.
        options = {
            name: repr(value)
            for name, value in sorted(vars(args).items())
            if name not in ("parser", "func", "json", "full_pass")
        }
        environment = sorted((k, v) for k, v in os.environ.items() if k.startswith("EXTHANDLER_"))
        what = [__version__, sys.executable, os.getcwd(), options, environment, sys.path]
        self.key = hashlib.sha256(json.dumps(what).encode()).hexdigest()

    @classmethod
    def of(cls, args: argparse.Namespace) -> _QuietApply | None:
        """None when the goal is not a local file (or cannot be read: the pass says why),
        or a status upload is asked for (each pass uploads)."""
        if args.full_pass or getattr(args, "status_url", None) or "://" in args.goal:
            return None  # (no URL of any scheme: `is_url` costs its imports here)
        try:
            with open(args.goal, "rb") as file:
                data = file.read()
        except OSError:
            return None
        return cls(args, data)

    def serve(self, args: argparse.Namespace) -> bool:
        """Show the view and say so, if the stamp vouches for it; False: run the pass."""
        from .._state import quiet

        data = quiet.check(self.root, self.meta, key=self.key, goal=self.goal)
        if data is None:
            return False
        if args.json and not sys.stdout.isatty():
            print(data.decode("utf-8", "replace"))  # the file is the one-line JSON view
        elif args.json:
            print(json.dumps(json.loads(data), indent=2))
        else:
            from .._report.view import parse_instance_view

            view = parse_instance_view(data)
            if view is None:
                return False
            _print_view(view, False)
        print("exthandler: nothing to do", file=sys.stderr)
        return True

    def keep(self, runtime: Runtime, goal: GoalState, ours: Sequence[object]) -> None:
        """Stamp the pass that just ended, if it may be (see `Runtime.stamp_quiet_pass`;
        called with the state dir still locked)."""
        # Where plugins are found (each path's listing), and the runtime's own code.
        found = [os.path.abspath(entry or ".") for entry in sys.path]
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        runtime.stamp_quiet_pass(
            goal,
            key=self.key,
            goal_digest=self.goal,
            listeners=ours,
            followed=[*found, package],
        )


def _cmd_apply(args: argparse.Namespace) -> int:
    quiet = _QuietApply.of(args)
    if quiet is not None:
        _warn_missing_repositories(args)
        if quiet.serve(args):
            return EXIT_OK

    import anyio

    from .._goalstate import load_goal_state, parse_goal_state
    from .._report.events import StepCounter
    from .._runtime import open_runtime
    from .progress import Progress

    try:
        if quiet is None:
            goal = load_goal_state(args.goal)
        else:  # the very bytes the stamp will name
            goal = parse_goal_state(quiet.data, source=args.goal)
    except GoalStateError as exc:
        return _problems(exc, sys.stderr)
    if quiet is None:
        _warn_missing_repositories(args)
    progress = Progress(out=sys.stderr) if sys.stderr.isatty() and not args.json else None
    tally = StepCounter()
    ours: list[object] = [progress, tally] if progress else [tally]
    config = _config(args, ours)

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            if args.process:
                # What is alive now (modules, classes, the goal state, the runtime) lives
                # until the process exits: out of the collector's way, each collection of
                # the pass's young objects skips it (-1.7% instructions, install of 100).
                # Not when called in another program's process, which lives on.
                gc.freeze()
            if progress is None:
                view = await runtime.apply(goal)
            else:
                async with anyio.create_task_group() as group:

                    async def tick() -> None:
                        while True:
                            await anyio.sleep(0.25)
                            progress.draw()

                    group.start_soon(tick)
                    view = await runtime.apply(goal)
                    group.cancel_scope.cancel()
                progress.clear()
            if quiet is not None and tally.commands == 0:
                quiet.keep(runtime, goal, ours)
            return view

    view, signum, failed = _run_runtime(main, config)
    if failed is not None:
        return failed
    if signum is not None:
        print(
            f"exthandler: stopped by {signal.Signals(signum).name}: what finished is recorded;"
            " the interrupted steps run again at the next apply",
            file=sys.stderr,
        )
        return 128 + signum
    assert view is not None
    _print_view(view, args.json)
    print(f"exthandler: {tally.summary(view)}", file=sys.stderr)
    return EXIT_FAILED if view.failed() else EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from .._goalstate import load_goal_state
    from .._runtime import open_runtime

    try:
        goal = load_goal_state(args.goal)
    except GoalStateError as exc:
        return _problems(exc, sys.stderr)
    _warn_missing_repositories(args)
    config = _config(args)

    async def main() -> Any:
        async with open_runtime(config) as runtime:
            return await runtime.plan(goal)

    plan, signum, failed = _run_runtime(main, config)
    if failed is not None:
        return failed
    if signum is not None:
        return 128 + signum
    assert plan is not None
    if args.json:
        print(json.dumps(plan.to_json(), indent=2 if sys.stdout.isatty() else None))
    else:
        for number, step in enumerate(plan.steps, 1):
            print(f"{number:3d}. {step.describe()}")
        if not plan.steps:
            print("nothing to do")
    for problem in plan.problems:
        print(f"exthandler: cannot be served: {problem}", file=sys.stderr)
    return EXIT_FAILED if plan.problems else EXIT_OK


def _run_runtime(
    work: Callable[[], Awaitable[_T]], config: RuntimeConfig
) -> tuple[_T | None, int | None, int | None]:
    """Run `work` until it ends or a signal stops it: (its result, the signal, None), or
    (None, None, the exit status) after saying what made it impossible."""
    try:
        result, signum = _run_until_signal(work)
    except GoalStateError as exc:  # what the handlers say makes the goal impossible
        return None, None, _problems(exc, sys.stderr)
    except StateDirLockedError as exc:
        print(f"exthandler: {exc}", file=sys.stderr)
        return None, None, EXIT_LOCKED
    except (StateDirError, OSError) as exc:
        return None, None, _unusable(exc, config.state_dir)
    return result, signum, None


def _unusable(exc: OSError, state_dir: Path) -> int:
    """One line for a state dir, log root or file of the runtime's that cannot be used."""
    if isinstance(exc, StateDirError):
        text = str(exc)
    else:
        text = f"{exc.filename or state_dir}: {exc.strerror or exc}"
    print(f"exthandler: {text}", file=sys.stderr)
    return EXIT_INVALID


class _Terminated(Exception):
    """SIGTERM before the event loop listens for it (see `_run_until_signal`)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _run_until_signal(
    work: Callable[[], Awaitable[_T]], on_signal: Callable[[int], None] | None = None
) -> tuple[_T | None, int | None]:
    """Run `work` until it returns, or until SIGINT or SIGTERM: then it is cancelled (its
    commands' process groups are ended) and the signal's number is returned instead.
    `on_signal` is told the signal before the cancellation starts.

    A signal that comes before the event loop listens (while Python starts the loop)
    stops the call the same way, without a traceback.
    """
    import anyio

    if threading.current_thread() is not threading.main_thread():
        return anyio.run(work), None  # only the main thread can take signals
    received: list[int] = []
    finished: list[_T] = []
    failed: list[Exception] = []

    async def supervised() -> None:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        received.append(signum)
                        if on_signal is not None:
                            on_signal(signum)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            try:
                finished.append(await work())
            except Exception as exc:  # raised again below, outside the task group's wrapping
                failed.append(exc)
            group.cancel_scope.cancel()

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        anyio.run(supervised)
    except KeyboardInterrupt:
        return None, signal.SIGINT
    except _Terminated:
        return None, signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed:
        raise failed[0]
    if finished:
        return finished[0], None
    return None, received[0] if received else signal.SIGINT


def _cmd_status(args: argparse.Namespace) -> int:
    from .._fs import open_regular
    from .._report.view import InstanceView, read_instance_view

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        # A state dir must be there and readable; one where nothing was applied yet (no
        # view file) shows an empty view.
        os.listdir(state_dir)
        view_path = state_dir / ".exthandler" / "instance-view.json"
        if os.path.lexists(view_path):
            with open_regular(view_path):
                pass  # readable: read_instance_view says whether it parses
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            reason = "no such state dir"
        else:
            reason = exc.strerror or str(exc)
        print(f"exthandler: {exc.filename or state_dir}: {reason}", file=sys.stderr)
        return EXIT_INVALID
    view = read_instance_view(state_dir) or InstanceView(goal_state_id=None, extensions=())
    if args.name is None:
        _print_view(view, args.json)
        return EXIT_OK
    ext = view.extension(args.name)
    if ext is None:
        names = {e.name.casefold(): e.name for e in view.extensions}
        close = _suggestion(args.name.casefold(), list(names))
        hint = f"; did you mean {names[close]!r}?" if close else ""
        print(
            f"exthandler: {state_dir}: no extension named {args.name!r} in the instance view{hint}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if args.json:
        whole = view.to_json()["extensions"]
        print(json.dumps(whole[view.extensions.index(ext)], indent=2))
    else:
        from .._report.view import render_extension

        print(render_extension(ext))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from .._service.notify import Notifier

    # Taken out of the environment: the commands run must not talk to systemd.
    notifier = Notifier.from_environ(os.environ)
    hangups: list[int] = []
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        # Until the loop listens, a SIGHUP is kept for it rather than ending the process.
        previous = signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    try:
        return _serve(args, notifier, hangups, main_thread)
    finally:
        if main_thread:
            signal.signal(signal.SIGHUP, previous)


def _serve(
    args: argparse.Namespace, notifier: Notifier | None, hangups: list[int], main_thread: bool
) -> int:
    """`run` from its configuration: see `_cmd_run`."""

    from .._service.config import (
        RUN_KEYS,
        ConfigError,
        config_path,
        given_options,
        read_settings,
    )
    from .._service.serve import Settings, StepStatus, serve

    path = config_path(args.config)
    given = given_options(args)
    plugins = [StepStatus(notifier)] if notifier is not None else []

    def read() -> Settings:
        resolved, service = read_settings(args, path, given)
        if "no_extensions" not in given and path is not None:  # the file turned it off
            resolved.extensions_switch = ("no_extensions = false", str(path))
        _warn_missing_repositories(resolved)
        runtime = _config(resolved, plugins).replace(
            log_file=service.log.file,
            log_max_bytes=service.log.max_bytes,
            log_backups=service.log.backups,
        )
        values = {key.name: getattr(resolved, key.name) for key in RUN_KEYS}
        values.update(service.flat())
        return Settings(
            runtime, resolved.source, resolved.interval, values, self_update=service.self_update
        )

    try:
        first = read()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"exthandler: {problem}", file=sys.stderr)
        return EXIT_INVALID

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    told: list[int] = []

    def stopping(signum: int) -> None:
        if notifier is not None and not told:
            told.append(signum)
            notifier.send("STOPPING=1", f"STATUS=stopping ({signal.Signals(signum).name})")

    async def main() -> None:
        from .._service.update import SelfUpdate

        await serve(
            first,
            read,
            say=say,
            notifier=notifier,
            pending_reloads=len(hangups),
            reload_on_hangup=main_thread,  # only the main thread can take signals
            updater=SelfUpdate(first.self_update, say),
        )

    from .._service.daemon import RESTART_EXIT
    from .._service.update import RestartInto

    try:
        _, signum = _run_until_signal(main, on_signal=stopping)
    except RestartInto as exc:
        print(f"exthandler: {exc}", file=sys.stderr)
        return RESTART_EXIT
    except StateDirLockedError as exc:
        print(f"exthandler: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (StateDirError, OSError) as exc:
        return _unusable(exc, first.runtime.state_dir)
    if signum is not None:
        stopping(signum)  # a signal before the loop listened says so too
        print(f"exthandler: {signal.Signals(signum).name}, stopping", file=sys.stderr)
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    from .._service.config import ConfigError, ServiceConfig, config_path, load_config
    from .._service.logs import Follower, handler_logs, last_lines, printable

    path = config_path(args.config)
    try:
        service = load_config(path) if path is not None else ServiceConfig()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"exthandler: {problem}", file=sys.stderr)
        return EXIT_INVALID
    configured = service.run.get("state_dir")
    state_dir = Path(args.state_dir or configured or default_state_dir())
    clean = printable if sys.stdout.isatty() else (lambda text: text)
    last: list[Path] = []  # the file shown last

    def write(file: Path, data: bytes) -> None:
        if len(follower.positions) > 1 and last != [file]:
            sys.stdout.write(f"\n==> {file} <==\n")
        last[:] = [file]
        sys.stdout.write(clean(data.decode("utf-8", "replace")))
        sys.stdout.flush()

    follower = Follower(write)
    try:
        if args.name is None:
            files = [service.log.file or state_dir / "exthandler.log"]
            notes: list[str] = []
        else:
            directory = _handler_log_dir(args, state_dir)
            if directory is None:
                return EXIT_INVALID
            files, notes = handler_logs(directory)
        for number, file in enumerate(files):
            data, inode, offset = last_lines(file, args.lines)
            if args.name is not None:
                sys.stdout.write(f"{'' if number == 0 else chr(10)}==> {file} <==\n")
            sys.stdout.write(clean(data.decode("utf-8", "replace")))
            follower.watch(file, inode, offset)
            last[:] = [file]
        sys.stdout.flush()
        for note in notes:
            print(f"exthandler: {note}", file=sys.stderr)
        if args.follow:
            follower.run()
    except OSError as exc:
        print(f"exthandler: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return EXIT_OK


def _handler_log_dir(args: argparse.Namespace, state_dir: Path) -> Path | None:
    """The log folder of the extension (any case) or handler (`Publisher.Type`) NAME."""
    from .._report.view import read_instance_view

    log_root = Path(args.log_root) if args.log_root else state_dir / "log"
    view = read_instance_view(state_dir)
    names = {e.name.casefold(): e.type for e in view.extensions} if view else {}
    handler = names.get(args.name.casefold())
    if handler is None:
        try:
            folders = {name.casefold(): name for name in os.listdir(log_root)}
        except OSError:
            folders = {}
        handler = folders.get(args.name.casefold())
    if handler is None:
        known = sorted({*(e.name for e in view.extensions)} if view else set())
        close = _suggestion(args.name, known)
        hint = f"; did you mean {close!r}?" if close else ""
        print(
            f"exthandler: {state_dir}: no extension or handler named {args.name!r}{hint}",
            file=sys.stderr,
        )
        return None
    return log_root / handler


def _cmd_config_unit(args: argparse.Namespace) -> int:
    """The systemd unit shipped in the package, starting this Python's exthandler."""
    from importlib import resources

    unit = (resources.files("exthandler") / "data" / "exthandler.service").read_text()
    print(
        unit.replace(
            "ExecStart=/usr/bin/exthandler ", f"ExecStart={sys.executable} -m exthandler "
        ),
        end="",
    )
    return EXIT_OK


def _cmd_config_check(args: argparse.Namespace) -> int:
    from .._service.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: valid configuration, {len(config.run)} run option(s) set")
    return EXIT_OK


def _cmd_daemon(args: argparse.Namespace) -> int:
    from .._service.agents import AgentStore
    from .._service.config import ConfigError, ServiceConfig, config_path, load_config
    from .._service.daemon import Daemon
    from .._service.notify import Notifier

    if threading.current_thread() is not threading.main_thread():
        print("exthandler: daemon: must run in the main thread", file=sys.stderr)
        return EXIT_INVALID
    path = config_path(args.config)
    try:
        service = load_config(path) if path is not None else ServiceConfig()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"exthandler: {problem}", file=sys.stderr)
        return EXIT_INVALID
    state_dir = Path(args.state_dir or service.run.get("state_dir") or default_state_dir())
    run_args: list[str] = []
    if path is not None:
        run_args += ["--config", str(path.absolute())]
    if args.state_dir:
        run_args += ["--state-dir", str(Path(args.state_dir).absolute())]
    daemon = Daemon(
        store=AgentStore(state_dir.absolute()),
        run_args=run_args,
        notifier=Notifier.from_environ(os.environ),
        limit=args.failure_limit,
        window=args.failure_window,
        restart_delay=max(0.0, args.restart_delay),
        health_timeout=args.health_timeout,
    )
    return daemon.run()


def _agent_version(text: str) -> Any:
    """`--version` of an agent package: 2 to 4 numbers."""
    from .._model import Version

    try:
        return Version.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_agent_package(args: argparse.Namespace) -> int:
    from exthandler_sdk._signing import SigningError, load_signer

    from .._service.agents import build_agent_package

    if (args.sign_key is None) != (args.sign_cert is None) or (
        args.chain is not None and args.sign_key is None
    ):
        args.parser.error("--sign-key and --sign-cert go together (and --chain needs them)")
    try:
        signer = None
        if args.sign_key is not None:
            signer = load_signer(
                Path(args.sign_key), Path(args.sign_cert), args.chain and Path(args.chain)
            )
        path = build_agent_package(
            Path(args.out), version=args.version, family=args.family, signer=signer
        )
    except SigningError as exc:
        print(f"exthandler: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, ValueError) as exc:
        print(f"exthandler: {args.out}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(path)
    return EXIT_OK


def _service_state_dir(args: argparse.Namespace) -> Path | None:
    """The state dir of `--state-dir`, else of the configuration file, else the default;
    None (said why) when the configuration file is invalid."""
    from .._service.config import ConfigError, ServiceConfig, config_path, load_config

    path = config_path(args.config)
    try:
        service = load_config(path) if path is not None else ServiceConfig()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"exthandler: {problem}", file=sys.stderr)
        return None
    return Path(args.state_dir or service.run.get("state_dir") or default_state_dir())


def _cmd_agent_list(args: argparse.Namespace) -> int:
    from .. import __version__
    from .._service.agents import AgentStore

    state_dir = _service_state_dir(args)
    if state_dir is None:
        return EXIT_INVALID
    store = AgentStore(state_dir)
    selected = store.selected()
    rows = [("VERSION", "STATE", "NOTE")]
    for version in store.installed():
        reason = store.bad_reason(version)
        state = "bad" if reason is not None else "good"
        note = reason or ("selected" if version == selected else "")
        rows.append((str(version), state, note))
    rows.append((__version__, "good", "this installation (the fallback)"))
    from .._report.view import align_columns

    print(align_columns(rows))
    return EXIT_OK


def _cmd_image_list(args: argparse.Namespace) -> int:
    import anyio

    from .._packages.repository import RepositorySet
    from .._report.view import align_columns

    missing = _missing_repositories(args)
    if missing:
        for line in missing:
            print(f"exthandler: {line}", file=sys.stderr)
        return EXIT_INVALID
    sources = RepositorySet([_package_source(path) for path in repositories(args)])
    try:
        refs = anyio.run(sources.list_all)
    except PackageError as exc:
        print(f"exthandler: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "publisher": r.handler.publisher,
                        "type": r.handler.type,
                        "version": str(r.version),
                    }
                    for r in refs
                ],
                indent=2,
            )
        )
        return EXIT_OK
    if not refs:
        print("no handler packages found", file=sys.stderr)
        return EXIT_OK
    rows = [("PUBLISHER", "TYPE", "VERSION")]
    rows += [(r.handler.publisher, r.handler.type, str(r.version)) for r in refs]
    print(align_columns(rows))
    return EXIT_OK


def _json_argument(option: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise GoalStateError([f"{option}: not valid JSON ({exc})"]) from exc
    if not isinstance(value, dict):
        raise GoalStateError([f"{option}: must be a JSON object"])
    return value


def _cmd_extension_set(args: argparse.Namespace) -> int:
    from .edit import set_extension

    try:
        edit = set_extension(
            Path(args.goal_state),
            name=args.name,
            publisher=args.publisher,
            type_=args.type,
            version=args.version,
            settings=_json_argument("--settings", args.settings),
            protected_settings=_json_argument("--protected-settings", args.protected_settings),
            auto_upgrade_minor=args.auto_upgrade_minor,
        )
    except GoalStateError as exc:
        return _problems(exc, sys.stderr)
    for line in edit.changes():
        print(line)
    return EXIT_OK


def _cmd_extension_delete(args: argparse.Namespace) -> int:
    from .edit import delete_extension

    try:
        delete_extension(Path(args.goal_state), name=args.name)
    except GoalStateError as exc:
        return _problems(exc, sys.stderr)
    return EXIT_OK


def _positive_int(text: str) -> int:
    """`--concurrency`: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _lines(text: str) -> int:
    """`--lines`: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of lines, got {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    """A duration in seconds: a finite number above 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _suggestion(word: str, known: Sequence[str]) -> str | None:
    """The known word closest to `word`, when one is close enough to be a likely typo."""
    import difflib

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return close[0] if close else None


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width found without `shutil` (an import that costs a
    command line more than the rest of its parsing)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_help_width())


def _help_width() -> int:
    """The width help is laid out for: as argparse finds it, less its margin of two."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    else:
        try:
            stream = sys.__stdout__
            width = (os.get_terminal_size(stream.fileno()).columns if stream else 0) or 80
        except (OSError, ValueError):
            width = 80
    return width - 2


class _Parser(argparse.ArgumentParser):
    """argparse, with errors that say what was wrong and what was probably meant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices:
            return
        choices = ", ".join(map(str, action.choices))
        close = _suggestion(str(value), [str(c) for c in action.choices])
        hint = f"; did you mean {close!r}?" if close else ""
        if isinstance(action, argparse._SubParsersAction):
            message = f"unknown command {value!r}{hint} (commands: {choices})"
            raise argparse.ArgumentError(None, message)
        raise argparse.ArgumentError(
            action, f"invalid choice {value!r}{hint} (choose from {choices})"
        )

    def error(self, message: str) -> NoReturn:
        # "argument --x: reason" reads as the `path: reason` of every other error.
        super().error(message.removeprefix("argument "))

    def unrecognized(self, extras: Sequence[str]) -> NoReturn:
        """Stop on arguments this (sub)command does not take, naming the likely option."""
        known = [o for action in self._actions for o in action.option_strings]
        hints = []
        for extra in extras:
            option = extra.split("=", 1)[0]
            if not option.startswith("-"):
                continue
            if option in known:
                hints.append(f"{option} goes after the command")
            elif (close := _suggestion(option, known)) is not None:
                hints.append(f"did you mean {close}?")
        text = f"unrecognized arguments: {' '.join(extras)}"
        self.error("; ".join([text, *hints]))


def _options_of_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the state dir (default: $EXTHANDLER_STATE_DIR, else /var/lib/exthandler for root,"
        " else $XDG_STATE_HOME/exthandler or ~/.local/state/exthandler)",
    )
    _option_repo(parser)
    _options_of_policy(parser)


def _options_of_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="FILE",
        help="the extension policy file (default: $EXTHANDLER_POLICY; see docs/policy.md)",
    )
    parser.add_argument(
        "--trusted-root",
        action="append",
        metavar="PEM",
        help="a root certificate package signatures may chain to; may repeat",
    )
    parser.add_argument(
        "--no-extensions",
        action="store_true",
        help="process no extension: report each as not processed",
    )


def _option_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        action="append",
        metavar="DIR",
        help="a directory of handler packages, or its URL (http(s) with index.json, s3, gs,"
        " az); may repeat; the entries of $EXTHANDLER_REPO (colon-separated) come after",
    )


def _option_command_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--command-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="one time limit for every handler command (default: per command, install,"
        " update and disable 900 s, enable and uninstall 300 s)",
    )


def _status_destination(text: str) -> str:
    """`--status-url`: checked when the command line is read; the reason never quotes
    the URL's credentials."""
    from .._upload.targets import destination

    try:
        destination(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _option_status_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status-url",
        type=_status_destination,
        metavar="URL",
        help="upload the aggregate status document there: a path, file://, http(s):// (an"
        " Azure blob when it carries a SAS), s3://, gs:// or az://; the goal state's own"
        " status blob wins",
    )


class _Unbuilt:
    """Stands in for the parser of a command that a command line does not run: every call
    is taken and does nothing. Building every command's options costs more than the
    interpreter's start, so `main` builds only those of the command it runs."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return self._ignore

    def _ignore(self, *args: object, **kwargs: object) -> _Unbuilt:
        return self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `exthandler` parser; each command's parser is its namespace's `parser`.

    With `only`, the other top-level commands are listed (by name and help) but their
    options are not built: they cannot be parsed then.
    """
    parser = _Parser(prog="exthandler", description="Run VM extension handlers to a goal state.")
    parser.add_argument("--version", action="version", version=f"exthandler {__version__}")
    parser.set_defaults(parser=parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        group: Any, name: str, func: Callable[[argparse.Namespace], int] | None, help: str
    ) -> argparse.ArgumentParser:
        if group is commands and only is not None and name != only:
            # Named and listed, as add_parser would, without building a parser: a
            # command line parses one command, and each parser costs a millisecond.
            unbuilt = _Unbuilt()
            commands.choices[name] = unbuilt
            listing = commands._ChoicesPseudoAction
            commands._choices_actions.append(listing(name, (), help))
            return cast(argparse.ArgumentParser, unbuilt)
        sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        sub.set_defaults(parser=sub, func=func)
        return sub

    apply = command(commands, "apply", _cmd_apply, "converge the state dir to a goal state, once")
    apply.add_argument("goal", metavar="GOAL", help="the goal-state file (any of the four formats)")
    _options_of_runtime(apply)
    apply.add_argument(
        "--log-root", metavar="DIR", help="where the handlers' logs go (default: <state-dir>/log)"
    )
    apply.add_argument(
        "--json", action="store_true", help="print the instance view as JSON, and nothing else"
    )
    apply.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="at most N steps in flight across all handlers (default: 8)",
    )
    _option_command_timeout(apply)
    _option_status_url(apply)
    apply.add_argument(
        "--full-pass",
        action="store_true",
        help="run the whole pass even when nothing it reads changed since the last one"
        " that changed nothing (which apply otherwise only shows again)",
    )

    plan = command(
        commands, "plan", _cmd_plan, "show the steps apply would run, and why, changing nothing"
    )
    plan.add_argument("goal", metavar="GOAL", help="the goal-state file (any of the four formats)")
    _options_of_runtime(plan)
    plan.add_argument(
        "--log-root", metavar="DIR", help="where the handlers' logs go (default: <state-dir>/log)"
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="accepted as for apply (the plan does not depend on it)",
    )
    _option_command_timeout(plan)

    status = command(commands, "status", _cmd_status, "show the last instance view")
    status.add_argument(
        "name",
        metavar="NAME",
        nargs="?",
        help="one extension (any case): show its whole message and its substatuses",
    )
    status.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the state dir (default: as for apply)",
    )
    status.add_argument("--json", action="store_true", help="print the whole instance view as JSON")

    run = command(commands, "run", _cmd_run, "keep converging to SOURCE as it changes")
    run.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="a goal-state file, a directory of them, or a URL (http(s), s3, gs, az);"
        " default: `source` in the configuration file",
    )
    _options_of_runtime(run)
    run.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="how often SOURCE is looked at (default: 5)",
    )
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="at most N steps in flight across all handlers (default: 8)",
    )
    _option_command_timeout(run)
    _option_status_url(run)
    run.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file (default: /etc/exthandler/exthandler.toml when it"
        " exists); the command line's options win; SIGHUP reads it again",
    )

    logs = command(commands, "logs", _cmd_logs, "show the runtime's log, or one extension's logs")
    logs.add_argument(
        "name",
        metavar="NAME",
        nargs="?",
        help="an extension (any case) or a handler (Publisher.Type): its CommandExecution.log"
        " and the rest of its log folder",
    )
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep showing what is appended (Ctrl-C ends)"
    )
    logs.add_argument(
        "--lines",
        "-n",
        type=_lines,
        default=50,
        metavar="N",
        help="how many last lines of each file (default: 50)",
    )
    logs.add_argument("--state-dir", metavar="DIR", help="the state dir (default: as for run)")
    logs.add_argument(
        "--log-root", metavar="DIR", help="where the handlers' logs are (default: <state-dir>/log)"
    )
    logs.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file naming the state dir and the log file (default:"
        " /etc/exthandler/exthandler.toml when it exists)",
    )

    config = command(commands, "config", None, "the service's configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    config_check = command(
        config_commands, "check", _cmd_config_check, "check a configuration file"
    )
    config_check.add_argument("file", metavar="FILE", help="the TOML configuration file")
    command(
        config_commands,
        "unit",
        _cmd_config_unit,
        "print the systemd unit file, starting this exthandler",
    )

    daemon = command(
        commands,
        "daemon",
        _cmd_daemon,
        "the service's parent: run the newest good agent version's `run` as a child, restart"
        " it, go back from a version that keeps failing",
    )
    daemon.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file, passed to `run` (default: /etc/exthandler/exthandler.toml"
        " when it exists)",
    )
    daemon.add_argument(
        "--state-dir", metavar="DIR", help="the state dir, passed to `run` (default: as for run)"
    )
    daemon.add_argument(
        "--failure-limit",
        type=_positive_int,
        default=3,
        metavar="N",
        help="abnormal exits within the window that make a version bad (default: 3)",
    )
    daemon.add_argument(
        "--failure-window",
        type=_positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="the window those exits are counted in (default: 300)",
    )
    daemon.add_argument(
        "--restart-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the pause before starting a child that exited abnormally (default: 1)",
    )
    daemon.add_argument(
        "--health-timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="a child that has spoken and then sends no watchdog ping for this long is killed"
        " and counted as an abnormal exit (default: 120)",
    )

    agent = command(commands, "agent", None, "agent packages and installed agent versions")
    agent_commands = agent.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    agent_package = command(
        agent_commands,
        "package",
        _cmd_agent_package,
        "build an agent package from this exthandler, for self-update (docs/operating.md)",
    )
    agent_package.add_argument(
        "--out", required=True, metavar="DIR", help="the dir (a repository) to write it into"
    )
    agent_package.add_argument(
        "--version",
        type=_agent_version,
        metavar="V",
        help="the package's version (default: this exthandler's)",
    )
    agent_package.add_argument(
        "--family",
        default="Prod",
        metavar="NAME",
        help="the agent family it is published for (default: Prod)",
    )
    agent_package.add_argument(
        "--sign-key", metavar="KEY", help="the PEM private key to sign the package with"
    )
    agent_package.add_argument(
        "--sign-cert", metavar="CERT", help="the PEM certificate of that key"
    )
    agent_package.add_argument(
        "--chain", metavar="CHAIN", help="PEM intermediate certificates to carry in the signature"
    )
    agent_list = command(
        agent_commands, "list", _cmd_agent_list, "list the agent versions installed in a state dir"
    )
    agent_list.add_argument(
        "--state-dir", metavar="DIR", help="the state dir (default: as for run)"
    )
    agent_list.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file naming the state dir (default:"
        " /etc/exthandler/exthandler.toml when it exists)",
    )

    validate = command(
        commands, "validate", _cmd_validate, "check a goal state without touching state"
    )
    validate.add_argument(
        "goal", metavar="GOAL", nargs="?", help="the goal-state file (any of the four formats)"
    )
    _option_repo(validate)
    validate.add_argument("--policy", metavar="FILE", help="check this extension policy file")

    extension = command(commands, "extension", None, "handler images and goal-state editing")
    ext_commands = extension.add_subparsers(dest="ext_command", required=True, metavar="COMMAND")
    image = command(ext_commands, "image", None, "handler packages the repositories offer")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    image_list = command(image_commands, "list", _cmd_image_list, "list every handler and version")
    _option_repo(image_list)
    image_list.add_argument(
        "--json", action="store_true", help="print [{publisher, type, version}] as JSON"
    )

    ext_set = command(
        ext_commands, "set", _cmd_extension_set, "add or change an extension in a goal state"
    )
    ext_set.add_argument(
        "--name", required=True, help="the extension's name (an existing one matches in any case)"
    )
    ext_set.add_argument(
        "--publisher", required=True, help="the handler's publisher, e.g. Contoso.Examples"
    )
    ext_set.add_argument("--type", required=True, help="the handler's type, e.g. Hello")
    ext_set.add_argument(
        "--version", required=True, help="typeHandlerVersion, e.g. 1.0 (2 to 4 numbers)"
    )
    ext_set.add_argument(
        "--settings", metavar="JSON", help="the public settings, a JSON object (replaces them)"
    )
    ext_set.add_argument(
        "--protected-settings",
        metavar="JSON",
        help="the protected settings, a JSON object (replaces them; the file is made 0600)",
    )
    ext_set.add_argument(
        "--auto-upgrade-minor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="autoUpgradeMinorVersion: upgrade to newer minor versions (default: on for a new"
        " extension; an existing one keeps its value)",
    )
    ext_set.add_argument(
        "--goal-state",
        required=True,
        metavar="FILE",
        help="the native goal-state file to edit (created if missing)",
    )

    ext_delete = command(
        ext_commands, "delete", _cmd_extension_delete, "remove an extension from a goal state"
    )
    ext_delete.add_argument("--name", required=True, help="the extension's name (any case)")
    ext_delete.add_argument(
        "--goal-state", required=True, metavar="FILE", help="the native goal-state file to edit"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    words = sys.argv[1:] if argv is None else argv
    # The first word that is not an option names the command (the top level's options,
    # --version and -h, take no value).
    only = next((word for word in words if not word.startswith("-")), "")
    args, extras = build_parser(only).parse_known_args(words)
    if extras:
        args.parser.unrecognized(extras)
    args.process = argv is None  # the process's own command: it exits when this returns
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
