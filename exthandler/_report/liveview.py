"""The live instance view: what each extension shows while the runtime works.

It owns the extensions' states of the current pass, builds the instance view from them
and the handler records, writes the view file (throttled while a pass runs, durably at
its end, from a worker thread) and tells the plugins. Everything else here runs on the
event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio
import anyio.to_thread
import pluggy
from exthandler_sdk import ErrorCode, StatusLevel
from exthandler_sdk.files import fsync_dir
from exthandler_sdk.protocol import Substatus

from .._errors import StateDirError
from .._fs import write_atomic
from .._model import ExtensionGoal, HandlerName, RequestedState, Version
from .._plan.planner import HandlerRecord, HandlerState, HandlerTarget
from .view import (
    AgentView,
    ExtensionView,
    InstanceView,
    ShownStatus,
    SourceView,
    StatusView,
    SubstatusView,
    error_view,
    parse_instance_view,
    status_view,
    substatus_view,
)

SIGNATURE_SUBSTATUS = "PackageSignature"

__all__ = ["ExtensionState", "LiveView", "now"]


def now() -> str:
    """The time as status files and the view spell it (to the second: a pass that shows
    thousands of extensions at once formats each second once)."""
    second = int(time.time())
    cached = _NOW.get(second)
    if cached is None:
        _NOW.clear()
        cached = _NOW[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return cached


_NOW: dict[int, str] = {}


class ExtensionState:
    """What the runtime knows of one extension during a pass (feeds the view)."""

    goal: ExtensionGoal
    sequence_number: int | None
    statuses: tuple[StatusView, ...]
    substatuses: tuple[SubstatusView, ...]
    level: StatusLevel
    heartbeat: SubstatusView | None
    # Its status is a terminal report's, with the report's own time: nothing of it was
    # made up at this pass (a quiet pass may be stamped only then; see _state/quiet.py).
    from_report: bool

    def __init__(self, goal: ExtensionGoal) -> None:
        self.goal = goal
        self.sequence_number = None
        self.statuses = ()
        self.substatuses = ()
        self.level = StatusLevel.TRANSITIONING
        self.heartbeat = None
        self.from_report = False


class LiveView:
    """The extensions of the current pass, the view built from them, and its file."""

    view_path: Path
    plugins: pluggy.PluginManager
    records: Callable[[], Mapping[HandlerName, HandlerRecord]]
    extensions: dict[str, ExtensionState]
    goal_id: str | None
    restored: InstanceView | None
    # The health of `run`'s goal-state source, when a run loop reports one.
    source: SourceView | None
    # The agent's version and self-update, when a service shows them.
    agent: AgentView | None
    dirty: bool
    # Where a durable write (an fsync or two) waits: a worker thread, never the loop.
    limiter: anyio.CapacityLimiter | None
    # A package whose signature did not verify though none was required: the warning its
    # extensions show, by handler and version, while the runtime lives.
    warnings: dict[tuple[HandlerName, Version], SubstatusView]
    # The last view file's bytes, not parsed yet (see `restore_data`).
    _restored_data: bytes | None
    # What the view file holds: as read when the runtime opened, then as last written.
    _on_disk: bytes | None

    def __init__(
        self,
        view_path: Path,
        plugins: pluggy.PluginManager,
        records: Callable[[], Mapping[HandlerName, HandlerRecord]],
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.view_path = view_path
        self.plugins = plugins
        self.records = records
        self.limiter = limiter
        self.extensions = {}
        self.goal_id = None
        self.restored = None
        self.source = None
        self.agent = None
        self.dirty = False
        self.warnings = {}
        self._restored_data = None
        self._on_disk = None

    def restore_data(self, data: bytes) -> None:
        """`restore` the view file's `data`, parsed only when something asks for the view
        before this runtime's first pass: an apply replaces it at once, and parsing the
        view of thousands of extensions costs more than the rest of an unchanged pass.
        A view showing signature warnings is parsed now (they outlive the pass)."""
        self._on_disk = data
        if f"ComponentStatus/{SIGNATURE_SUBSTATUS}/".encode() in data:
            view = parse_instance_view(data)
            if view is not None:
                self.restore(view)
        else:
            self._restored_data = data

    def restore(self, view: InstanceView) -> None:
        """Show `view` (the last one written) until the first pass of this runtime; the
        signature warnings it shows stay with their handler versions."""
        # The agent section was the last runtime's: this one shows its own.
        self.restored = view if view.agent is None else view.replace(agent=None)
        self._restored_data = None
        prefix = f"ComponentStatus/{SIGNATURE_SUBSTATUS}/"
        for ext in view.extensions:
            for sub in ext.substatuses:
                if sub.code.startswith(prefix):
                    with contextlib.suppress(ValueError):
                        key = (HandlerName.parse(ext.type), Version.parse(ext.type_handler_version))
                        self.warnings[key] = sub

    def instance_view(self) -> InstanceView:
        if self._restored_data is not None:  # parsed if still to be shown, else dropped
            data, self._restored_data = self._restored_data, None
            if self.goal_id is None:
                parsed = parse_instance_view(data)
                if parsed is not None and parsed.agent is not None:
                    parsed = parsed.replace(agent=None)  # the last runtime's
                self.restored = parsed
        if self.goal_id is None and self.restored is not None:
            # Nothing applied by this runtime yet: the last view, with today's source.
            if self.source is None and self.agent is None:
                return self.restored
            return self.restored.replace(
                source=self.source or self.restored.source, agent=self.agent
            )
        views = []
        for state in self.extensions.values():
            view = self.extension_view(state)
            if view is not None:
                views.append(view)
        return InstanceView(
            goal_state_id=self.goal_id,
            extensions=tuple(views),
            source=self.source,
            agent=self.agent,
        )

    def extension_view(self, state: ExtensionState) -> ExtensionView | None:
        goal = state.goal
        if goal.state is RequestedState.UNINSTALL:
            return None
        record = self.records().get(goal.handler)
        version = goal.version
        handler_state = HandlerState.NOT_INSTALLED
        if record is not None:
            if record.upgrade is not None and record.upgrade.failed:
                version, handler_state = record.upgrade.target, HandlerState.FAILED_UPGRADE
            elif record.version is not None:
                version = record.version
                handler_state = record.state
                ext = record.extension(goal.name)
                if handler_state is not HandlerState.NOT_INSTALLED:
                    enabled = ext is not None and ext.enabled
                    handler_state = HandlerState.ENABLED if enabled else HandlerState.INSTALLED
        statuses = state.statuses or (
            StatusView(
                code="ProvisioningState/transitioning",
                level="Info",
                display_status="Transitioning",
                message="",
                time=now(),
            ),
        )
        warning = self.warnings.get((goal.handler, version))
        return ExtensionView(
            name=goal.name,
            type=str(goal.handler),
            type_handler_version=str(version),
            handler_state=handler_state.value,
            sequence_number=state.sequence_number,
            statuses=statuses,
            substatuses=state.substatuses
            + ((state.heartbeat,) if state.heartbeat else ())
            + ((warning,) if warning else ()),
        )

    # -- changes ----------------------------------------------------------------------------

    def changed(self, state: ExtensionState) -> None:
        self.dirty = True
        if not self.plugins.hook.exthandler_extension_changed.get_hookimpls():
            return  # nobody listens: the view of the extension is not worth building
        view = self.extension_view(state)
        if view is not None:
            self.plugins.hook.exthandler_extension_changed(view=view)

    def show(
        self, state: ExtensionState, shown: ShownStatus, heartbeat: SubstatusView | None
    ) -> None:
        state.statuses = (shown.status,)
        state.substatuses = shown.substatuses
        state.level = shown.level
        state.heartbeat = heartbeat
        self.changed(state)

    def fail(self, name: str, code: int, message: str) -> None:
        state = self.extensions[name]
        state.statuses = (error_view(code, message, now()),)
        state.substatuses = ()
        state.level = StatusLevel.ERROR
        state.from_report = False
        self.changed(state)

    def signature_warning(
        self, handler: HandlerName, version: Version, message: str | None
    ) -> None:
        """Show `message` (None: nothing) as a `PackageSignature` warning substatus of the
        extensions of `handler` at `version`: its package's signature did not verify, and
        none was required."""
        key = (handler, version)
        if message is None:
            if self.warnings.pop(key, None) is None:
                return
        else:
            self.warnings[key] = substatus_view(
                Substatus(name=SIGNATURE_SUBSTATUS, status=StatusLevel.WARNING, message=message)
            )
        for state in self.extensions.values():
            if state.goal.handler == handler:
                self.changed(state)

    def transitioning(self, states: Iterable[ExtensionState], message: str) -> None:
        """Show `states` as work still to do (a step that was cut short, say)."""
        for state in states:
            state.statuses = (status_view(StatusLevel.TRANSITIONING, 0, message, now()),)
            state.substatuses = ()
            state.level = StatusLevel.TRANSITIONING
            state.from_report = False
            self.changed(state)

    def still_refused(self, record: HandlerRecord, target: HandlerTarget) -> None:
        """A package refused before, unchanged since, for an unchanged goal: its error stands."""
        code, message = record.last_errors.get("") or (
            int(ErrorCode.PACKAGE_DOWNLOAD),
            f"{target.handler} {target.version}: the package was refused before",
        )
        for ext in target.extensions:
            self.fail(ext.name, code, message)

    def not_installed(self, target: HandlerTarget) -> None:
        """Disabled extensions of a handler that was never installed: nothing to do."""
        for ext in target.extensions:
            state = self.extensions.get(ext.name)
            if state is not None and not state.statuses:
                message = "disabled; the handler is not installed, so nothing ran"
                state.statuses = (status_view(StatusLevel.SUCCESS, 0, message, now()),)
                state.level = StatusLevel.SUCCESS
                state.from_report = False
                self.changed(state)

    # -- the view file ----------------------------------------------------------------------

    async def publish(self, *, durable: bool) -> None:
        self.dirty = False
        view = self.instance_view()
        # One line: json's C encoder only serves documents without indentation, and a view
        # of thousands of extensions is written several times a second.
        data = json.dumps(view.to_json()).encode()
        if data == self._on_disk:
            # The file says this already: no new file (a pass over unchanged handlers
            # writes nothing); a durable publish only makes sure it is on the disk.
            if durable:
                await anyio.to_thread.run_sync(self._sync, data, limiter=self.limiter)
        elif durable:
            await anyio.to_thread.run_sync(self._write, data, durable, limiter=self.limiter)
        else:  # a rename without fsync: a few syscalls, cheaper here than in a thread
            self._write(data, durable)
        self.plugins.hook.exthandler_instance_view_changed(view=view)

    def _write(self, data: bytes, durable: bool) -> None:
        self._on_disk = None  # unknown until the write is done
        try:
            write_atomic(self.view_path, data, mode=0o600, durable=durable)
        except OSError as exc:
            raise StateDirError(
                f"{self.view_path}: cannot write the instance view: {exc.strerror or exc}"
            ) from exc
        self._on_disk = data

    def _sync(self, data: bytes) -> None:
        """fsync the view file, which holds `data`, and its dir (the last write may not
        have been durable); nearly free when it was. No file there: it is written again."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.view_path, flags)
        except OSError:
            self._write(data, True)
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.view_path.parent)

    async def writer(self) -> None:
        """Write the view while a pass runs: at most five times a second, and never more
        than a twentieth of the time (a view of thousands of extensions takes a while)."""
        pause = 0.2
        while True:
            await anyio.sleep(pause)
            if self.dirty:
                started = time.monotonic()
                await self.publish(durable=False)
                pause = max(0.2, 20 * (time.monotonic() - started))
