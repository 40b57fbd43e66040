"""Turning what handlers wrote (status files, heartbeats) and what a command did into the
statuses the live view shows.

Reading is separate from showing: `read` only reads files and records and returns data,
so it may run in a worker thread; `show` (and everything else here that changes the
view) runs on the event loop, where the plugins are told.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
from exthandler_sdk import ErrorCode, Operation, StatusLevel
from exthandler_sdk.protocol import (
    HEARTBEAT_NAME,
    STATUS_DIR,
    HeartbeatState,
    StatusReport,
    status_file_name,
)

from .._executors.process import CommandResult
from .._model import HandlerName, RequestedState
from .._plan.planner import ExtensionRecord, HandlerRecord, HandlerTarget, Step, StepKind
from .._report.liveview import ExtensionState, LiveView, now
from .._report.status import read_heartbeat, read_status_file
from .._report.view import CommandFailure, SubstatusView, compose_status
from .._state.store import Store
from .state import Manifests

__all__ = ["Found", "Statuses"]

# One extension's status as read: its state, its status file, the failure its record keeps.
Found = tuple[ExtensionState, StatusReport | None, CommandFailure | None]


class Statuses:
    """Reads handlers' status files and heartbeats and shows them in the live view."""

    store: Store
    view: LiveView
    manifests: Manifests
    records: Mapping[HandlerName, HandlerRecord]
    # The targets of the current (or last) pass.
    targets: Callable[[], Mapping[HandlerName, HandlerTarget]]
    # The view's extensions by lower-case extension name and handler key, and the dict of
    # extensions it was built from (a pass replaces that dict: the index is then rebuilt).
    _index: tuple[object, dict[str, list[ExtensionState]]] | None

    def __init__(
        self,
        store: Store,
        view: LiveView,
        manifests: Manifests,
        records: Mapping[HandlerName, HandlerRecord],
        targets: Callable[[], Mapping[HandlerName, HandlerTarget]],
    ) -> None:
        self.store = store
        self.view = view
        self.manifests = manifests
        self.records = records
        self.targets = targets
        self._index = None

    def _named(self, name: str) -> list[ExtensionState]:
        """The extensions `name` stands for (an extension's name or a handler's, any case),
        in the view's order: one look-up, not a walk over every extension for each
        dependency (that walk made a pass of many dependencies quadratic)."""
        extensions = self.view.extensions
        if self._index is None or self._index[0] is not extensions:
            index: dict[str, list[ExtensionState]] = {}
            for state in extensions.values():
                own = state.goal.name.lower()
                index.setdefault(own, []).append(state)
                if state.goal.handler.key != own:
                    index.setdefault(state.goal.handler.key, []).append(state)
            self._index = (extensions, index)
        return self._index[1].get(name.lower(), [])

    def refresh(self, *, force: bool = False, handler: HandlerName | None = None) -> None:
        """Seed each extension's status from what is on disk and what its record remembers
        (`force`: also those already showing one; `handler`: only its extensions)."""
        self.show(self.read(force, handler))

    def show(self, found: Sequence[Found]) -> None:
        for state, report, failure in found:
            self.set(state, report, failure, ran_ok=True, operation=None)

    def read(self, force: bool, handler: HandlerName | None) -> list[Found]:
        """What each extension's status file and record say now (reads only: it may run in
        a worker thread; `show` applies the result on the event loop)."""
        found: list[Found] = []
        for state in self.view.extensions.values():
            if (state.statuses and not force) or handler not in (None, state.goal.handler):
                continue
            record = self.records.get(state.goal.handler)
            if record is None or record.version is None or state.sequence_number is None:
                continue
            report = self.report_of(record, state)
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
        target = self.targets().get(handler)
        if target is None or ext.converged is None:
            return False
        wanted = next((e for e in target.extensions if e.name == ext.name), None)
        return wanted is not None and ext.converged == target.fingerprint(wanted)

    def report_of(self, record: HandlerRecord, state: ExtensionState) -> StatusReport | None:
        """The extension's status file in the record's current handler dir, if readable."""
        return read_status_file(self.status_path(record, state))

    def status_path(self, record: HandlerRecord, state: ExtensionState) -> Path:
        """Where the extension's status file is, in the record's current handler dir."""
        assert record.version is not None
        assert state.sequence_number is not None
        multi = self.manifests.is_multi(record.handler, record.version)
        directory = self.store.handler_dir(record.handler, record.version)
        name = status_file_name(state.goal.name if multi else None, state.sequence_number)
        return directory / STATUS_DIR / name

    def set(
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
        state.from_report = (
            failure is None
            and report is not None
            and report.status.terminal
            and report.timestamp is not None
        )

    def _heartbeat(self, handler: HandlerName) -> SubstatusView | None:
        """The heartbeat as a `Heartbeat` substatus, for handlers whose manifest asks for one."""
        record = self.records.get(handler)
        if record is None or record.version is None:
            return None
        facts = self.manifests.facts(handler, record.version)
        if facts is None or not facts.heartbeat:
            return None
        beat = read_heartbeat(self.store.handler_dir(handler, record.version) / HEARTBEAT_NAME)
        if beat is None:
            return None
        level = {HeartbeatState.READY: "Info", HeartbeatState.NOT_READY: "Warning"}
        return SubstatusView(
            code=f"ComponentStatus/Heartbeat/{beat.state.value}",
            level=level.get(beat.state, "Error"),
            display_status=beat.state.value,
            message=beat.message,
        )

    def converged(self, step: Step) -> None:
        """A CONVERGE step: show the extension's status, if nothing shows one yet (or it
        is disabled, where the disable's report is the one that counts)."""
        name = step.extension
        if name is None or name not in self.view.extensions:
            return
        state = self.view.extensions[name]
        if not state.statuses or state.goal.state is RequestedState.DISABLED:
            record = self.records.get(step.handler)
            report = None
            if record is not None and record.version is not None:
                report = self.report_of(record, state)
            self.set(state, report, None, ran_ok=True, operation=None)

    def command_ended(
        self,
        step: Step,
        affected: Sequence[ExtensionState],
        result: CommandResult,
        *,
        multi: bool,
    ) -> None:
        """Show how a command ended: a failure always; a success of enable or disable with
        what its status file says (install, update and uninstall leave that to the enable)."""
        failure = None
        if not result.ok:
            code = (
                ErrorCode.COMMAND_TIMEOUT
                if result.timed_out
                else ErrorCode.for_operation(result.operation)
            )
            failure = CommandFailure(
                operation=result.operation,
                code=int(code),
                description=result.describe(),
                excerpt=result.excerpt,
            )
        directory = self.store.handler_dir(step.handler, step.version)
        for state in affected:
            if state.sequence_number is None:
                continue
            if result.ok and step.kind not in (StepKind.ENABLE, StepKind.DISABLE):
                continue
            name = status_file_name(state.goal.name if multi else None, state.sequence_number)
            report = read_status_file(f"{directory}/{STATUS_DIR}/{name}")
            self.set(state, report, failure, ran_ok=result.ok, operation=result.operation)

    async def dependency_failure(self, name: str, wait: float) -> str | None:
        """Wait (up to `wait` seconds) for the extension or handler `name` to reach a
        terminal status; why it failed, or None when it succeeded (or is not enabled)."""
        states = self._named(name)
        deadline = time.monotonic() + wait
        for state in states:
            if state.goal.state is not RequestedState.ENABLED:
                continue
            while state.level is StatusLevel.TRANSITIONING and time.monotonic() < deadline:
                await anyio.sleep(0.2)
                record = self.records.get(state.goal.handler)
                if record is None or record.version is None:
                    break
                report = self.report_of(record, state)
                if report is not None and report.status.terminal:
                    self.set(state, report, None, ran_ok=True, operation=None)
            if state.level is StatusLevel.ERROR:
                return state.statuses[0].message if state.statuses else "error"
            if state.level is StatusLevel.TRANSITIONING:
                return "it did not reach a terminal status in time"
        return None
