"""Driving one handler to its target: the planner's `next_step`/`advance` loop.

Before the loop the record is reconciled with the disk (a kill between a removal and its
record); after every step the record is saved durably (the journal), the last error of
each extension remembered, and the HandlerState files written. An unexpected error or a
refused write stops this handler only, as a crash would: its step runs again next pass.
"""

from __future__ import annotations

import logging
import os
import time
import traceback

import pluggy
from exthandler_sdk import ErrorCode
from exthandler_sdk.protocol import HANDLER_ENVIRONMENT_NAME

from .._errors import StateDirError
from .._executors.process import clear_marker
from .._plan.planner import (
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
from .._plugins import StepResult
from .._report.liveview import LiveView
from .._state.store import Store
from .scheduler import Slot
from .state import Manifests, Pass
from .statuses import Statuses
from .steps import StepRunner

__all__ = ["HandlerDriver"]


class HandlerDriver:
    """Drives the handlers of a state dir, one `drive` call per handler and pass."""

    store: Store
    view: LiveView
    statuses: Statuses
    manifests: Manifests
    steps: StepRunner
    plugins: pluggy.PluginManager

    def __init__(
        self,
        store: Store,
        view: LiveView,
        statuses: Statuses,
        manifests: Manifests,
        steps: StepRunner,
        plugins: pluggy.PluginManager,
    ) -> None:
        self.store = store
        self.view = view
        self.statuses = statuses
        self.manifests = manifests
        self.steps = steps
        self.plugins = plugins

    async def drive(self, target: HandlerTarget, slot: Slot, work: Pass) -> None:
        """`_drive`, with an unexpected error stopping this handler only."""
        try:
            await self._drive(target, slot, work)
        except StateDirError:
            raise  # the runtime's own files: the pass cannot go on (see Engine.apply)
        except OSError as exc:
            # The machine refused a write or a read of this handler's files (a full or
            # read-only disk, say): it stops where it is, as after a crash, and the step
            # runs again at the next pass; the others go on.
            what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            self.store.log(
                f"{target.handler}: stopped: {what}",
                level=logging.ERROR,
                handler=target.handler,
                version=target.version,
            )
            for ext in target.extensions:
                self.view.fail(
                    ext.name, ErrorCode.UNKNOWN, f"stopped: {what}; it runs again next time"
                )
        except Exception as exc:  # one handler's fault must not end the pass
            self.store.log(
                f"{target.handler}: stopped by an unexpected error: {exc!r}\n"
                + "".join(traceback.format_exception(exc)),
                level=logging.ERROR,
                handler=target.handler,
                version=target.version,
            )
            for ext in target.extensions:
                self.view.fail(ext.name, ErrorCode.UNKNOWN, f"internal error: {exc}")

    async def _drive(self, target: HandlerTarget, slot: Slot, work: Pass) -> None:
        handler = target.handler
        stored = work.records.get(handler) or HandlerRecord(handler=handler)
        record = self._reconcile(stored)  # a stat or two: not worth a thread
        if record is not stored:
            work.changed = True
        # The record whose HandlerState files wait for the next step (see below).
        unwritten: HandlerRecord | None = None
        try:
            while True:
                target = self.with_manifest_facts(record, target)
                step = next_step(record, target)
                if unwritten is not None and (step is None or step.kind is not StepKind.ENABLE):
                    self._write_protocol_state(unwritten)
                    unwritten = None
                if step is None:
                    await self._settled(record, target, work)
                    break
                work.changed = True
                self.plugins.hook.exthandler_step_started(step=step)
                await slot.take()
                self._show_running(step, target)
                began = time.monotonic()
                ran = await self.steps.run(step, record, target, work)
                took = time.monotonic() - began
                record, go_on = advance(record, target, step, ran.outcome)
                record = _remember_error(record, step, ran.outcome, ran.message)
                work.records[handler] = record
                # A dir laid out from code alone is laid out again, identically, after a
                # crash: its record rides with the next step's (records are whole).
                if not (ran.outcome.ok and ran.rebuildable):
                    await self.store.save_record(record)
                # When nothing reads HandlerState between steps, Installed waits for the
                # next one: the enable that follows at once replaces it (and a replaced
                # file frees an inode, which on ext4 without a journal slows the creations
                # after it). If the enable does not finish, it is written when the turn ends.
                if ran.outcome.ok and ran.state_unread and step.kind is StepKind.INSTALL:
                    unwritten = record
                else:
                    self._write_protocol_state(record)
                    unwritten = None
                result = StepResult.of(step, ran.outcome, ran.message, env=ran.env, duration=took)
                _log_step(result)
                self.plugins.hook.exthandler_step_finished(
                    step=step, ok=ran.outcome.ok, message=ran.message, result=result
                )
                if not go_on:
                    break
        finally:
            try:
                if unwritten is not None:  # the enable that was to follow did not finish
                    self._write_protocol_state(unwritten)
            finally:
                if slot.held:
                    clear_marker(self.store.marker_path(handler))  # its commands left it empty
                    slot.release()

    def settled(self, target: HandlerTarget, work: Pass) -> bool:
        """Whether `target`'s handler is already there and has nothing to do: its dir
        intact (one stat), no step left, nothing for `_settled` to record. Then `drive`
        would do nothing either, and the pass needs no task for it; False when unsure
        (`drive` then decides, as always)."""
        if target.removes_handler or target.version is None:
            return False
        record = work.records.get(target.handler)
        if record is None or record.version is None or record.upgrade is not None:
            return False
        if record.failed not in (None, target.handler_fingerprint):
            return False
        directory = self.store.handler_dir(record.handler, record.version)
        try:
            if os.stat(f"{directory}/{HANDLER_ENVIRONMENT_NAME}").st_size <= 0:
                return False
        except OSError:
            return False
        try:
            return next_step(record, self.with_manifest_facts(record, target)) is None
        except Exception:  # `drive` meets it again, and reports it
            return False

    def _show_running(self, step: Step, target: HandlerTarget) -> None:
        """Show the extensions a fetch or a command acts on as transitioning, from the
        moment it starts (in the live view, and in the view file at its next write)."""
        if step.kind is StepKind.FETCH:
            note = f"fetching {step.handler} {step.version}"
        elif step.kind.runs_command:
            note = f"{step.kind.value} of {step.handler} {step.version} is running"
        else:
            return
        names = [step.extension] if step.extension else [e.name for e in target.extensions]
        states = [self.view.extensions[n] for n in names if n in self.view.extensions]
        self.view.transitioning(states, note)

    async def _settled(self, record: HandlerRecord, target: HandlerTarget, work: Pass) -> None:
        """No step is left: show what that means, and forget a failure the goal moved past."""
        if target.removes_handler:
            stored = work.records.get(record.handler)
            if stored is not None and stored != HandlerRecord(handler=record.handler):
                # Removed, but the kill came between deleting its dir and recording that
                # (the reconciled record has nothing left to do): forget it now.
                emptied = HandlerRecord(handler=record.handler)
                work.changed = True
                work.records[record.handler] = emptied
                await self.store.save_record(emptied)
            return
        if record.version is None:
            if record.failed == target.handler_fingerprint:
                self.view.still_refused(record, target)
            else:
                self.view.not_installed(target)
        if record.failed not in (None, target.handler_fingerprint):
            # The goal moved past an old failure without needing a step: forget it, so
            # that the failed goal is tried again if it ever comes back.
            errors = {k: v for k, v in record.last_errors.items() if k}
            record = record.replace(failed=None, failed_package=None, last_errors=errors)
            work.changed = True
            work.records[record.handler] = record
            await self.store.save_record(record)
            self.statuses.refresh(force=True, handler=record.handler)

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
            record = record.replace(upgrade=None)
        if record.version is None:
            return record
        directory = self.store.handler_dir(record.handler, record.version)
        # The common case costs one stat: a HandlerEnvironment.json with content says
        # that the dir is there and intact.
        try:
            intact = os.stat(f"{directory}/{HANDLER_ENVIRONMENT_NAME}").st_size > 0
        except (FileNotFoundError, NotADirectoryError):
            intact = False
        if intact:
            return record
        present = directory.is_dir()
        if record.upgrade is None and not present:
            forgotten = tuple(e.replace(enabled=False, converged=None) for e in record.extensions)
            return HandlerRecord(handler=record.handler, extensions=forgotten)
        # Written without fsync, a power loss may have taken it. A directory that is
        # gone altogether (an upgrade killed right after removing the old version) is
        # the planner's business: its removal step simply completes.
        if present:
            self.store.prepare_handler_dir(record.handler, record.version)
        return record

    def with_manifest_facts(self, record: HandlerRecord, target: HandlerTarget) -> HandlerTarget:
        """The target with what the target version's manifest says of updates and of
        multiple extensions, once its dir is there to say it."""
        if target.version is None:
            return target
        facts = self.manifests.facts(record.handler, target.version)
        if facts is None or (
            target.update_with_install == facts.update_with_install
            and target.continue_on_update_failure == facts.continue_on_update_failure
            and target.multi_config == facts.multi
        ):
            return target
        return target.replace(
            update_with_install=facts.update_with_install,
            continue_on_update_failure=facts.continue_on_update_failure,
            multi_config=facts.multi,
        )

    def _write_protocol_state(self, record: HandlerRecord) -> None:
        """Write the HandlerState files the record stands for (per extension, too, for a
        handler of several extensions)."""
        upgrade = record.upgrade
        if upgrade is not None and upgrade.failed:
            failed_dir = self.store.handler_dir(record.handler, upgrade.target)
            self.store.write_handler_state(failed_dir, HandlerState.FAILED_UPGRADE)
        if record.version is None:
            return
        directory = self.store.handler_dir(record.handler, record.version)
        self.store.write_handler_state(directory, record.state)
        if self.manifests.is_multi(record.handler, record.version):
            for ext in record.extensions:
                state = HandlerState.ENABLED if ext.enabled else record.state
                if state is HandlerState.ENABLED and not ext.enabled:
                    state = HandlerState.INSTALLED
                self.store.write_handler_state(directory, state, ext.name)


_STEPS = logging.getLogger("exthandler.steps")


def _log_step(result: StepResult) -> None:
    """One record of the stdlib logger `exthandler.steps` per step: DEBUG when it
    succeeded, WARNING when it failed; its fields as `extra` attributes."""
    level = logging.DEBUG if result.ok else logging.WARNING
    if not _STEPS.isEnabledFor(level):
        return
    what = f"{result.kind} {result.handler} {result.version}"
    if result.extension:
        what += f" ({result.extension})"
    outcome = "ok" if result.ok else f"failed ({result.code}): {result.message}"
    _STEPS.log(
        level,
        "%s: %s in %.3f s",
        what,
        outcome,
        result.duration,
        extra={
            "handler": str(result.handler),
            "version": str(result.version),
            "extension": result.extension,
            "operation": None if result.operation is None else result.operation.value,
            "step": result.kind,
            "ok": result.ok,
            "code": result.code,
        },
    )


def _remember_error(
    record: HandlerRecord, step: Step, outcome: Outcome, message: str
) -> HandlerRecord:
    """Keep the last failure of each extension so that later views still show it."""
    if step.kind in (StepKind.UPGRADE_DISABLED, StepKind.UPGRADE_INSTALL_SKIPPED):
        return record  # runs nothing, fails never
    key = step.extension or ""
    if outcome.ok and not record.last_errors:
        return record  # the common case: nothing to forget
    errors = dict(record.last_errors)
    if outcome.ok:
        errors.pop(key, None)
        if step.kind in (StepKind.ENABLE, StepKind.FETCH, StepKind.INSTALL):
            errors.pop("", None)
    else:
        errors[key] = (outcome.code, message)
    return record.replace(last_errors=errors)
