"""Carrying out one step of the planner: fetch, a command, or a file operation.

Fetching asks the package source that listed the package to install it into the handler
dir (`PackageSource.install`); a command goes to the first executor that accepts the
handler dir's manifest (`Executor`). Neither knows what kind of source or executor it
talks to. How a step ended comes back as a `StepRun` for the driver to record.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import anyio
from exthandler_sdk import ErrorCode, Operation
from exthandler_sdk.protocol import NOT_RUN, SUPPORTED_FEATURES, Variable

from .._errors import NoEligibleVersionError, PackageError
from .._executors.base import CommandRequest, Executor
from .._executors.process import CommandResult, write_log_entry
from .._packages.manifest import MANIFEST_NAME
from .._packages.repository import Installed, Workspace
from .._plan.planner import HandlerRecord, HandlerTarget, Outcome, Step, StepKind
from .._policy.signature import CheckOutcome, PackageVerifier, SignatureCheck
from .._report.liveview import ExtensionState, LiveView
from .._state.store import Store
from .._values import Value, field
from .settings import SettingsWriter
from .state import Manifests, Pass
from .statuses import Statuses

__all__ = ["OPERATIONS", "StepRun", "StepRunner"]

OPERATIONS = {
    StepKind.INSTALL: Operation.INSTALL,
    StepKind.ENABLE: Operation.ENABLE,
    StepKind.DISABLE: Operation.DISABLE,
    StepKind.UPDATE: Operation.UPDATE,
    StepKind.UNINSTALL: Operation.UNINSTALL,
}
_DONE = Outcome(ok=True, exit_code=NOT_RUN)


class StepRun(Value):
    """How a step ended, and the protocol variables its command got (none: empty).

    `rebuildable`: what the step did is redone at no cost, with the same result, if a
    crash loses its record (a handler dir laid out from code). `state_unread`: nothing
    reads the HandlerState files before the handler's next step.
    """

    outcome: Outcome
    message: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    rebuildable: bool = False
    state_unread: bool = False


class StepRunner:
    """Runs the steps of every handler of a state dir."""

    store: Store
    view: LiveView
    statuses: Statuses
    manifests: Manifests
    executors: Sequence[Executor]
    settings: SettingsWriter
    workspace: Workspace
    # The runtime's command timeouts: one for all, or per handler (`Publisher.Type`).
    command_timeout: float | None
    handler_timeouts: Mapping[str, float]
    # Checks each package's signature before it is extracted (docs/policy.md).
    verifier: PackageVerifier | None

    def __init__(
        self,
        store: Store,
        view: LiveView,
        statuses: Statuses,
        manifests: Manifests,
        executors: Sequence[Executor],
        settings: SettingsWriter,
        workspace: Workspace,
        command_timeout: float | None = None,
        handler_timeouts: Mapping[str, float] | None = None,
        verifier: PackageVerifier | None = None,
    ) -> None:
        self.store = store
        self.view = view
        self.statuses = statuses
        self.manifests = manifests
        self.executors = executors
        self.settings = settings
        self.workspace = workspace
        self.command_timeout = command_timeout
        self.handler_timeouts = {} if handler_timeouts is None else handler_timeouts
        self.verifier = verifier

    async def run(
        self, step: Step, record: HandlerRecord, target: HandlerTarget, work: Pass
    ) -> StepRun:
        kind = step.kind
        if kind is StepKind.FETCH:
            return await self._fetch(step, target, work)
        if kind is StepKind.REMOVE_DIR:
            self.manifests.forget(step.handler, step.version)
            # A rename (the files go at the end of the pass): not worth a thread.
            self.store.remove_handler_dir(step.handler, step.version)
            return StepRun(outcome=_DONE)
        if kind is StepKind.COPY_STATE:
            assert step.source is not None
            await self.workspace.run_sync(
                self.store.copy_state, step.handler, step.source, step.version
            )
            return StepRun(outcome=_DONE)
        if kind is StepKind.CONVERGE:
            self.statuses.converged(step)
            return StepRun(outcome=_DONE)
        if not kind.runs_command:  # an upgrade phase that needs no command
            return StepRun(outcome=_DONE)
        return await self._command(step, record, target, work)

    # -- fetch ----------------------------------------------------------------------------

    async def _fetch(self, step: Step, target: HandlerTarget, work: Pass) -> StepRun:
        handler, version = step.handler, step.version
        directory = self.store.handler_dir(handler, version)
        self.manifests.forget(handler, version)
        try:
            ref = work.catalog.find(handler, version)
            if directory.exists():  # left by an interrupted run after extraction
                await self.workspace.run_sync(shutil.rmtree, directory)
            source = work.catalog.source_of(ref)
            if source is None:
                raise PackageError(
                    ErrorCode.PACKAGE_DOWNLOAD, f"{ref.file_name}: no source offers it any longer"
                )
            check = SignatureCheck(
                handler=handler,
                version=version,
                encoded_signature=work.signature_of(handler),
                required=work.policy.requires_signature(handler),
            )
            checked = CheckOutcome()
            workspace = self.workspace
            if self.verifier is not None:
                workspace = workspace.replace(check=self.verifier.bind(check, checked))
            installed: Installed = await source.install(ref, directory, workspace)
            if check.required and not checked.done and not installed.rebuildable:
                raise PackageError(
                    ErrorCode.PACKAGE_DOWNLOAD,
                    "the policy requires a signed package, and its source installed it"
                    " without letting the runtime verify its signature",
                )
            self.view.signature_warning(handler, version, checked.warning)
            try:
                self.store.prepare_handler_dir(handler, version)
            except OSError as exc:  # e.g. a package holding a file named config or status
                raise PackageError(
                    ErrorCode.PACKAGE_EXTRACTION,
                    f"the handler dir cannot be laid out over the package: {exc}",
                ) from exc
        except (PackageError, NoEligibleVersionError, OSError) as exc:
            return self._fetch_failed(step, target, work, exc)
        self.manifests.remember(handler, version, installed.manifest)
        return StepRun(outcome=_DONE, rebuildable=installed.rebuildable)

    def _fetch_failed(
        self,
        step: Step,
        target: HandlerTarget,
        work: Pass,
        exc: PackageError | NoEligibleVersionError | OSError,
    ) -> StepRun:
        """Report a fetch that failed, and take away whatever it left of the handler dir.

        A refusal of the package itself (no manifest, an unsafe archive, a digest that does
        not match) is remembered with the package's identity; a failure of the machine or
        of the download (a full disk, an I/O error, a missing file) is tried again at the
        next pass.
        """
        handler, version = step.handler, step.version
        self.manifests.forget(handler, version)
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
                package = work.package_token(work.catalog.find(handler, version))
        for ext in target.extensions:
            self.view.fail(ext.name, code, message)
        outcome = Outcome(
            ok=False, exit_code=str(int(code)), code=int(code), transient=transient, package=package
        )
        return StepRun(outcome=outcome, message=message)

    # -- commands -----------------------------------------------------------------------

    def _timeout(self, step: Step) -> float | None:
        """The runtime's override of the command's timeout, if it has one."""
        if self.command_timeout is not None:
            return self.command_timeout
        for name, value in self.handler_timeouts.items():
            if name.lower() == step.handler.key:
                return value
        return None

    def _executor(self, request: CommandRequest) -> Executor:
        for executor in self.executors:
            if executor.accepts(request.manifest):
                return executor
        raise PackageError(
            ErrorCode.PACKAGE_DOWNLOAD,
            f"{request.handler} {request.version}: no executor runs this handler's commands",
        )

    async def _command(
        self, step: Step, record: HandlerRecord, target: HandlerTarget, work: Pass
    ) -> StepRun:
        operation = OPERATIONS[step.kind]
        handler = step.handler
        directory = self.store.handler_dir(handler, step.version)
        manifest = self.manifests.get(handler, step.version)
        multi = manifest is not None and manifest.supports_multiple_extensions
        names = [step.extension] if step.extension else [e.name for e in target.extensions]
        if not names:
            names = [e.name for e in record.extensions]
        affected = [self.view.extensions[n] for n in names if n in self.view.extensions]
        await self.settings.write(
            directory, self.view.extensions, names, multi=multi, written=work.written
        )
        self.settings.write_runtime_policy(directory, work.policy.runtime_policy(handler))
        env = {
            Variable.SEQUENCE_NUMBER: str(_sequence_for(step, record, target)),
            Variable.EXTENSION_PATH: str(directory),
            Variable.EXTENSION_VERSION: str(step.version),
            Variable.SUPPORTED_FEATURES: SUPPORTED_FEATURES,
            **dict(step.env),
        }
        if multi and step.extension:
            env[Variable.EXTENSION_NAME] = step.extension
        if manifest is None:
            error = self.manifests.error(handler, step.version)
            code = ErrorCode.MANIFEST_NOT_FOUND if error is None else error.code
            reason = f"{MANIFEST_NAME} is missing" if error is None else error.message
            message = f"{handler} {step.version}: {reason}"
            for state in affected:
                self.view.fail(state.goal.name, code, message)
            outcome = Outcome(ok=False, exit_code=str(int(code)), code=int(code))
            return StepRun(outcome=outcome, message=message)
        command = manifest.command(operation)
        if command is None:  # only updateCommand may be absent: nothing to run
            return StepRun(outcome=_DONE)
        request = CommandRequest(
            handler=handler,
            version=step.version,
            directory=directory,
            manifest=manifest,
            operation=operation,
            command=command,
            env=env,
            base_env=work.base_env,
            timeout=self._timeout(step),
            log_file=self.store.command_log(handler),
            marker=self.store.marker_path(handler),
        )
        executor = self._executor(request)
        with self._on_interrupt(step, affected, executor.command_line(request), env):
            result = await executor.run(request)
        if result.skipped is not None:
            warning = f"{handler} {step.version}: {result.skipped}; skipped {operation}"
            self.store.log(
                warning,
                level=logging.WARNING,
                handler=handler,
                version=step.version,
                operation=operation.value,
            )
            return StepRun(outcome=_DONE, message=warning)
        self.statuses.command_ended(step, affected, result, multi=multi)
        message = "" if result.ok else f"{result.describe()} {result.excerpt}".strip()
        return StepRun(
            outcome=_outcome(result),
            message=message,
            env=env,
            state_unread=not executor.reads_handler_state,
        )

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
        runs again at the next apply. The executor has ended what it started already."""
        started = datetime.now(UTC)
        try:
            yield
        except anyio.get_cancelled_exc_class():
            operation = OPERATIONS[step.kind]
            note = f"{operation.value} was interrupted: the runtime was stopped while it ran"
            self.store.log(
                f"{step.describe()}: {note}; it runs again at the next apply",
                level=logging.WARNING,
                handler=step.handler,
                version=step.version,
                extension=step.extension or "",
                operation=operation.value,
            )
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


def _outcome(result: CommandResult) -> Outcome:
    if result.timed_out:
        code = int(ErrorCode.COMMAND_TIMEOUT)
        return Outcome(ok=False, exit_code=str(code), code=code)
    exit_code = NOT_RUN if result.exit_code is None else str(result.exit_code)
    return Outcome(
        ok=result.ok,
        exit_code=exit_code,
        code=0 if result.ok else ErrorCode.for_operation(result.operation),
    )


def _sequence_for(step: Step, record: HandlerRecord, target: HandlerTarget) -> int:
    """The sequence number a command runs with: its extension's in the target, else in
    the record (a removal), else 0."""
    names = [step.extension] if step.extension else [e.name for e in target.extensions]
    for ext in target.extensions:
        if ext.name in names:
            return ext.sequence_number
    for ext_record in record.extensions:
        if ext_record.name in names or not names:
            return ext_record.sequence_number
    return 0
