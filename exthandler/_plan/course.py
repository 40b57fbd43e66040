"""The steps `apply` would run for a handler, and why, without running anything.

The planner is walked forward from the handler's record, every step assumed to succeed
(the course `apply` takes when nothing fails). Each step gets a reason a person can act
on: a new version, changed settings, a reboot, a new `forceUpdateTag`, a removal.
"""

from __future__ import annotations

from exthandler_sdk import Operation
from exthandler_sdk.protocol import NOT_RUN

from .._model import HandlerName, RequestedState, Version
from .._values import Value
from .planner import (
    ExtensionRecord,
    HandlerRecord,
    HandlerTarget,
    Outcome,
    Step,
    StepKind,
    advance,
    next_step,
)

__all__ = ["PlannedStep", "course"]

_COMMANDS = frozenset(operation.value for operation in Operation)
# Steps that record a phase and run nothing: not shown.
_SILENT = frozenset(
    {StepKind.CONVERGE, StepKind.UPGRADE_DISABLED, StepKind.UPGRADE_INSTALL_SKIPPED}
)


class PlannedStep(Value):
    """One step `apply` would run: what, on which handler dir and extension, and why.
    `after` names the extensions it waits for (`provisionAfterExtensions`)."""

    kind: str
    operation: Operation | None
    handler: HandlerName
    version: Version
    extension: str | None
    reason: str
    after: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "operation": None if self.operation is None else self.operation.value,
            "handler": str(self.handler),
            "version": str(self.version),
            "extension": self.extension,
            "reason": self.reason,
            "after": list(self.after),
        }

    def describe(self) -> str:
        what = f"{self.kind} {self.handler} {self.version}"
        if self.extension:
            what += f" ({self.extension})"
        after = f" [after {', '.join(self.after)}]" if self.after else ""
        return f"{what}: {self.reason}{after}"


def course(
    record: HandlerRecord | None,
    target: HandlerTarget,
    *,
    after: tuple[str, ...] = (),
    limit: int = 500,
) -> list[PlannedStep]:
    """The steps from `record` to `target` if each succeeds (at most `limit`)."""
    current = record or HandlerRecord(handler=target.handler)
    planned: list[PlannedStep] = []
    while len(planned) < limit:
        step = next_step(current, target)
        if step is None:
            break
        if step.kind not in _SILENT:
            planned.append(_planned(step, current, target, after))
        current, go_on = advance(current, target, step, Outcome(ok=True, exit_code=_exit(step)))
        if not go_on:
            break
    return planned


def _exit(step: Step) -> str:
    return "0" if step.kind.runs_command else NOT_RUN


def _planned(
    step: Step, record: HandlerRecord, target: HandlerTarget, after: tuple[str, ...]
) -> PlannedStep:
    kind = str(step.kind.value)
    return PlannedStep(
        kind=kind,
        operation=Operation(kind) if kind in _COMMANDS else None,
        handler=step.handler,
        version=step.version,
        extension=step.extension,
        reason=_reason(step, record, target),
        after=after if step.kind in (StepKind.FETCH, StepKind.INSTALL, StepKind.ENABLE) else (),
    )


def _reason(step: Step, record: HandlerRecord, target: HandlerTarget) -> str:
    installed = record.version or (record.upgrade.source if record.upgrade else None)
    moving = target.version is not None and installed is not None and installed != target.version
    if target.version is None:
        return "the handler is no longer in the goal state"
    if moving and step.kind is not StepKind.ENABLE:
        assert installed is not None
        direction = "upgrade" if target.version > installed else "downgrade"
        return f"{direction} {installed} -> {target.version}"
    if step.kind in (StepKind.FETCH, StepKind.INSTALL):
        return "not installed"
    wanted = next((e for e in target.extensions if e.name == step.extension), None)
    if wanted is None:
        return "the extension is no longer in the goal state"
    if step.kind is StepKind.DISABLE:
        return f"requested {wanted.state.value}"
    if step.kind is StepKind.UNINSTALL:
        return "requested uninstall"
    if step.kind is StepKind.ENABLE:
        if moving:
            return f"new version {target.version}"
        return _enable_reason(record.extension(wanted.name), target, wanted.name)
    return step.kind.value


def _enable_reason(ext: ExtensionRecord | None, target: HandlerTarget, name: str) -> str:
    if ext is None or ext.converged is None:
        return "not enabled yet"
    wanted = next(e for e in target.extensions if e.name == name)
    old = ext.converged.split("|")
    new = target.fingerprint(wanted).split("|")
    if len(old) != len(new):
        return "its record predates this runtime"
    if old[1] != new[1] and wanted.state is RequestedState.ENABLED:
        return "requested enabled"
    if old[2] != new[2] or old[3] != new[3]:
        return f"settings changed (sequence number {old[2]} -> {new[2]})"
    if old[4] != new[4]:
        return f"forceUpdateTag changed to {new[4]!r}"
    if old[5] != new[5]:
        return "the machine rebooted since it was enabled"
    return "its last enable did not succeed"
