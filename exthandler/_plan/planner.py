"""The planner: from a handler's persisted record and its target, the next step (pure).

The engine drives each handler by asking `next_step` what to do, running that step, and
recording its outcome with `advance`, durably, before asking again. Because the next step
is always derived from the record alone, a runtime killed at any instant resumes exactly
where it stopped: a step whose outcome was recorded is never repeated, and only the step
that was running at the instant of the kill may run again.

No I/O and no anyio here, so every rule is tested exhaustively.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping

from exthandler_sdk.protocol import NOT_RUN, HandlerState, Variable

from .._model import HandlerName, RequestedState, Version
from .._values import Value, field

__all__ = [
    "NOT_RUN",
    "ExtensionRecord",
    "ExtensionTarget",
    "HandlerRecord",
    "HandlerState",
    "HandlerTarget",
    "Outcome",
    "Step",
    "StepKind",
    "UpgradePhase",
    "UpgradeRecord",
    "advance",
    "next_step",
]


class StepKind(enum.StrEnum):
    FETCH = "fetch"  # download, extract, write HandlerEnvironment.json
    INSTALL = "install"
    ENABLE = "enable"
    DISABLE = "disable"
    UPDATE = "update"
    UNINSTALL = "uninstall"
    COPY_STATE = "copy-state"  # old mrseq and status/* into the new handler dir
    REMOVE_DIR = "remove-dir"
    CONVERGE = "converge"  # record that an extension reached its target; runs nothing
    # Upgrade phases that need no command: the old version had no enabled extension to
    # disable; the new version's manifest says UpdateWithoutInstall.
    UPGRADE_DISABLED = "upgrade-disabled"
    UPGRADE_INSTALL_SKIPPED = "upgrade-install-skipped"

    @property
    def runs_command(self) -> bool:
        return self in _COMMAND_STEPS


_COMMAND_STEPS = frozenset(
    {StepKind.INSTALL, StepKind.ENABLE, StepKind.DISABLE, StepKind.UPDATE, StepKind.UNINSTALL}
)


class UpgradePhase(enum.IntEnum):
    """The last completed phase of an upgrade, in the protocol's order.

    docs/protocol.md#lifecycle lists the order: the new version fetched, the old disabled,
    its `mrseq` and status copied, the update run, the old uninstalled and then removed.
    """

    FETCHED = 1
    OLD_DISABLED = 2
    STATE_COPIED = 3
    UPDATED = 4
    OLD_UNINSTALLED = 5
    OLD_REMOVED = 6


class ExtensionRecord(Value):
    """What the runtime knows of one extension of an installed handler.

    `converged` is the fingerprint of the target last carried through to the end, whether
    it succeeded or failed: an unchanged target is never run again.
    """

    name: str
    sequence_number: int = 0
    settings_digest: str = ""
    enabled: bool = False
    converged: str | None = None


class UpgradeRecord(Value):
    """An upgrade (or downgrade) under way from `source` to `target`."""

    source: Version
    target: Version
    phase: UpgradePhase = UpgradePhase.FETCHED
    disable_exit_codes: Mapping[str, str] = field(default_factory=dict)
    failed: bool = False  # the update failed: the new version is FailedUpgrade


class HandlerRecord(Value):
    """The persisted state of one handler (the journal the engine writes after each step).

    `version` is the version whose directory exists and is current; `failed` is the
    fingerprint of a handler-level target (fetch, install, upgrade) that failed, so that an
    unchanged goal state does not retry it. A transient failure (a full disk, an I/O error,
    a download that did not go through) is not remembered: it is retried at every pass.
    """

    handler: HandlerName
    version: Version | None = None
    state: HandlerState = HandlerState.NOT_INSTALLED
    extensions: tuple[ExtensionRecord, ...] = ()
    upgrade: UpgradeRecord | None = None
    failed: str | None = None
    # The package a failed fetch refused (see `HandlerTarget.package`): the refusal stands
    # until the goal or the package changes.
    failed_package: str | None = None
    uninstall_exit_code: str = NOT_RUN  # the old uninstall's exit code, for the next enables
    # The last failure per extension ("" for the handler), kept for the instance view.
    last_errors: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing installed and nothing to remember: the record can be deleted."""
        return (
            self.version is None
            and not self.extensions
            and self.upgrade is None
            and (self.failed is None)
        )

    def extension(self, name: str) -> ExtensionRecord | None:
        return next((e for e in self.extensions if e.name == name), None)

    def with_extension(self, record: ExtensionRecord) -> HandlerRecord:
        others = tuple(e for e in self.extensions if e.name != record.name)
        return self.replace(extensions=(*others, record))

    def without_extension(self, name: str) -> HandlerRecord:
        return self.replace(extensions=tuple(e for e in self.extensions if e.name != name))

    @property
    def any_enabled(self) -> bool:
        return any(e.enabled for e in self.extensions)


class ExtensionTarget(Value):
    """One extension as the goal state wants it, with its sequence number decided."""

    name: str
    state: RequestedState
    sequence_number: int
    settings_digest: str
    force_update_tag: str | None = None


class HandlerTarget(Value):
    """A handler as the goal state wants it. `version=None` removes the handler entirely.

    `update_with_install` and `continue_on_update_failure` come from the manifest of
    `version` and only matter once it has been fetched.
    """

    handler: HandlerName
    version: Version | None
    extensions: tuple[ExtensionTarget, ...] = ()
    boot_id: str = ""
    update_with_install: bool = True
    continue_on_update_failure: bool = False
    multi_config: bool = False
    # What identifies the bytes of the package of `version` (size, times), filled in only
    # when a refused fetch is remembered: a new package of the same version is tried.
    package: str = ""

    @property
    def removes_handler(self) -> bool:
        return self.version is None or all(
            e.state is RequestedState.UNINSTALL for e in self.extensions
        )

    def fingerprint(self, ext: ExtensionTarget) -> str:
        """What must change for an extension's commands to run again."""
        boot = self.boot_id if ext.state is RequestedState.ENABLED else ""
        return (
            f"{self.version}|{ext.state}|{ext.sequence_number}|{ext.settings_digest}"
            f"|{ext.force_update_tag or ''}|{boot}"
        )

    @functools.cached_property
    def handler_fingerprint(self) -> str:
        """Every extension's fingerprint, in one string (computed once: targets are frozen)."""
        return f"{self.version}/" + ";".join(
            sorted(f"{e.name}={self.fingerprint(e)}" for e in self.extensions)
        )


class Step(Value):
    """One thing to do to one handler.

    `version` is the handler dir the step acts on (whose command runs). For UPDATE,
    `source`/`target` are the versions updated from/to (on a downgrade `version` is the
    installed higher one); `env` carries the protocol's exit-code variables.
    """

    kind: StepKind
    handler: HandlerName
    version: Version
    extension: str | None = None
    source: Version | None = None
    target: Version | None = None
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        who = f" {self.extension}" if self.extension else ""
        if self.kind is StepKind.UPDATE:
            return f"update {self.handler} {self.source} -> {self.target}"
        return f"{self.kind}{who} {self.handler}-{self.version}"


class Outcome(Value):
    """How a step ended. `exit_code` is the command's, as a string (`NOT_RUN` if none ran)."""

    ok: bool
    exit_code: str = "0"
    code: int = 0  # the protocol error code of a failure (1009 for enable...)
    # A failure that may go away by itself (a full disk, an I/O error, a download that did
    # not go through): tried again at the next pass instead of being remembered.
    transient: bool = False
    package: str = ""  # for a fetch: which package bytes it saw (see HandlerTarget.package)


def _removal_step(record: HandlerRecord) -> Step | None:
    upgrade = record.upgrade
    if upgrade is not None and upgrade.phase < UpgradePhase.OLD_UNINSTALLED:
        # The new version never got installed: drop its directory, keep the old one.
        return Step(kind=StepKind.REMOVE_DIR, handler=record.handler, version=upgrade.target)
    if upgrade is not None and upgrade.phase is UpgradePhase.OLD_UNINSTALLED:
        # The old version is uninstalled already: drop its directory, then the new one's.
        return Step(kind=StepKind.REMOVE_DIR, handler=record.handler, version=upgrade.source)
    version = record.version
    if version is None:
        if record.failed is None:
            return None
        # Only a failed fetch is remembered: drop what it may have extracted, and the record.
        failed_version = Version.parse(record.failed.partition("/")[0])
        return Step(kind=StepKind.REMOVE_DIR, handler=record.handler, version=failed_version)
    for ext in record.extensions:
        if ext.enabled:
            return Step(
                kind=StepKind.DISABLE, handler=record.handler, version=version, extension=ext.name
            )
    if record.state is not HandlerState.NOT_INSTALLED:
        return Step(kind=StepKind.UNINSTALL, handler=record.handler, version=version)
    return Step(kind=StepKind.REMOVE_DIR, handler=record.handler, version=version)


def _upgrade_step(record: HandlerRecord, target: HandlerTarget) -> Step | None:
    upgrade = record.upgrade
    assert upgrade is not None
    handler, old, new = record.handler, upgrade.source, upgrade.target
    phase = upgrade.phase
    if phase is UpgradePhase.FETCHED:
        for ext in record.extensions:
            if ext.enabled:
                return Step(kind=StepKind.DISABLE, handler=handler, version=old, extension=ext.name)
        return Step(kind=StepKind.UPGRADE_DISABLED, handler=handler, version=old)
    if phase is UpgradePhase.OLD_DISABLED:
        return Step(kind=StepKind.COPY_STATE, handler=handler, version=new, source=old, target=new)
    if phase is UpgradePhase.STATE_COPIED:
        codes = upgrade.disable_exit_codes
        env = [
            (Variable.UPDATE_TO_VERSION, str(new)),
            (Variable.UPDATING_FROM_VERSION, str(old)),
            (Variable.DISABLE_EXIT_CODE, _single_exit_code(codes)),
        ]
        if target.multi_config:
            env.append(
                (
                    Variable.DISABLE_EXIT_CODES,
                    _multi_codes(codes),
                )
            )
        runner = max(old, new)  # on a downgrade the installed higher version's update runs
        return Step(
            kind=StepKind.UPDATE,
            handler=handler,
            version=runner,
            source=old,
            target=new,
            env=tuple(env),
        )
    if phase is UpgradePhase.UPDATED:
        return Step(kind=StepKind.UNINSTALL, handler=handler, version=old)
    if phase is UpgradePhase.OLD_UNINSTALLED:
        return Step(kind=StepKind.REMOVE_DIR, handler=handler, version=old)
    # OLD_REMOVED: the new version's install, unless its manifest says UpdateWithoutInstall.
    if target.update_with_install:
        return Step(
            kind=StepKind.INSTALL,
            handler=handler,
            version=new,
            env=((Variable.UNINSTALL_EXIT_CODE, record.uninstall_exit_code),),
        )
    return Step(kind=StepKind.UPGRADE_INSTALL_SKIPPED, handler=handler, version=new)


def _single_exit_code(codes: Mapping[str, str]) -> str:
    if not codes:
        return NOT_RUN
    return next(iter(codes.values())) if len(codes) == 1 else max(codes.values(), key=_severity)


def _severity(code: str) -> tuple[int, str]:
    return (0 if code in ("0", NOT_RUN) else 1, code)


def _multi_codes(codes: Mapping[str, str]) -> str:
    return json.dumps(
        [{"extensionName": name, "exitCode": code} for name, code in sorted(codes.items())]
    )


def next_step(record: HandlerRecord, target: HandlerTarget) -> Step | None:
    """The next step that brings `record` towards `target`, or None when it is there."""
    handler = record.handler
    if target.removes_handler:
        return _removal_step(record)
    assert target.version is not None
    if record.failed == target.handler_fingerprint and record.failed_package in (
        None,
        target.package,
    ):
        return None
    upgrade = record.upgrade
    if upgrade is not None:
        if upgrade.target != target.version and upgrade.phase < UpgradePhase.OLD_UNINSTALLED:
            # The goal moved on before the old version was gone: abandon this upgrade.
            return Step(kind=StepKind.REMOVE_DIR, handler=handler, version=upgrade.target)
        # A failed update (upgrade.failed) is tried again only now that the target changed.
        return _upgrade_step(record, target)
    if record.version is None:
        if all(e.state is RequestedState.DISABLED for e in target.extensions):
            return None  # disable acts only on what is installed: nothing to fetch
        return Step(kind=StepKind.FETCH, handler=handler, version=target.version)
    if record.version != target.version and record.state is HandlerState.NOT_INSTALLED:
        # Nothing ever ran in that dir: nothing to update from or uninstall, just drop it.
        return Step(kind=StepKind.REMOVE_DIR, handler=handler, version=record.version)
    if record.version != target.version:
        return Step(
            kind=StepKind.FETCH, handler=handler, version=target.version, source=record.version
        )
    version = record.version
    if record.state is HandlerState.NOT_INSTALLED:
        return Step(
            kind=StepKind.INSTALL,
            handler=handler,
            version=version,
            env=((Variable.UNINSTALL_EXIT_CODE, record.uninstall_exit_code),),
        )
    wanted = {e.name for e in target.extensions}
    for ext in record.extensions:
        if ext.name not in wanted:  # dropped from a multi-config handler
            if ext.enabled:
                return Step(
                    kind=StepKind.DISABLE, handler=handler, version=version, extension=ext.name
                )
            return Step(
                kind=StepKind.CONVERGE, handler=handler, version=version, extension=ext.name
            )
    for ext_target in target.extensions:
        current = record.extension(ext_target.name)
        if current is not None and current.converged == target.fingerprint(ext_target):
            continue
        enabled = current is not None and current.enabled
        if ext_target.state is RequestedState.ENABLED:
            # Only the first enable of a version after an upgrade hears of the old uninstall.
            first = current is None or not (current.converged or "").startswith(f"{version}|")
            code = record.uninstall_exit_code if first else NOT_RUN
            return Step(
                kind=StepKind.ENABLE,
                handler=handler,
                version=version,
                extension=ext_target.name,
                env=((Variable.UNINSTALL_EXIT_CODE, code),),
            )
        if enabled:
            return Step(
                kind=StepKind.DISABLE, handler=handler, version=version, extension=ext_target.name
            )
        return Step(
            kind=StepKind.CONVERGE, handler=handler, version=version, extension=ext_target.name
        )
    return None


def _ext_record(
    record: HandlerRecord, target: HandlerTarget, name: str
) -> tuple[ExtensionRecord, ExtensionTarget | None]:
    ext_target = next((e for e in target.extensions if e.name == name), None)
    current = record.extension(name) or ExtensionRecord(name=name)
    if ext_target is not None:
        current = current.replace(
            sequence_number=ext_target.sequence_number,
            settings_digest=ext_target.settings_digest,
        )
    return current, ext_target


def advance(
    record: HandlerRecord, target: HandlerTarget, step: Step, outcome: Outcome
) -> tuple[HandlerRecord, bool]:
    """The record after `step` ended with `outcome`, and whether to go on with this handler.

    A failure that the protocol does not excuse stops the handler for this goal state and
    is remembered, so that the same target is not retried until something changes.
    """
    kind = step.kind
    fingerprint = target.handler_fingerprint
    upgrade = record.upgrade
    in_upgrade = upgrade is not None and not target.removes_handler

    if kind is StepKind.FETCH:
        if not outcome.ok:
            if outcome.transient:
                return record.replace(failed=None, failed_package=None), False
            return record.replace(failed=fingerprint, failed_package=outcome.package), False
        if step.source is None:
            return record.replace(
                version=step.version,
                state=HandlerState.NOT_INSTALLED,
                failed=None,
                failed_package=None,
                uninstall_exit_code=NOT_RUN,
            ), True
        return record.replace(
            upgrade=UpgradeRecord(source=step.source, target=step.version),
            failed=None,
            failed_package=None,
        ), True

    if kind is StepKind.REMOVE_DIR:
        if (
            upgrade is not None
            and step.version == upgrade.target
            and upgrade.phase < (UpgradePhase.OLD_UNINSTALLED)
        ):
            return record.replace(upgrade=None), True
        if (
            upgrade is not None
            and step.version == upgrade.source
            and upgrade.phase is UpgradePhase.OLD_UNINSTALLED
        ):
            return record.replace(
                version=upgrade.target,
                state=HandlerState.NOT_INSTALLED,
                upgrade=upgrade.replace(phase=UpgradePhase.OLD_REMOVED),
            ), True
        # The handler is gone: an empty record is deleted by the store.
        return HandlerRecord(handler=record.handler), True

    if in_upgrade and upgrade is not None:
        return _advance_upgrade(record, target, step, outcome, upgrade)

    if kind is StepKind.INSTALL:
        if not outcome.ok:
            return record.replace(failed=fingerprint), False
        return record.replace(state=HandlerState.INSTALLED, failed=None), True

    if kind is StepKind.UNINSTALL:
        # Removal goes on whatever the uninstall said: the directory is deleted next.
        return record.replace(state=HandlerState.NOT_INSTALLED), True

    assert step.extension is not None
    current, ext_target = _ext_record(record, target, step.extension)
    converged = None if ext_target is None else target.fingerprint(ext_target)
    if kind is StepKind.ENABLE:
        # A failed enable leaves the extension as it was (enabled or not).
        updated = current.replace(enabled=outcome.ok or current.enabled, converged=converged)
        return _with_state(record.with_extension(updated)), outcome.ok
    if kind is StepKind.DISABLE:
        if target.removes_handler:
            updated = current.replace(enabled=False)
            return _with_state(record.with_extension(updated)), True
        updated = current.replace(enabled=not outcome.ok and current.enabled)
        if ext_target is None:
            return _with_state(record.without_extension(step.extension)), True
        updated = updated.replace(converged=converged)
        return _with_state(record.with_extension(updated)), outcome.ok
    # CONVERGE of an extension
    if ext_target is None:
        return _with_state(record.without_extension(step.extension)), True
    return _with_state(record.with_extension(current.replace(converged=converged))), True


def _with_state(record: HandlerRecord) -> HandlerRecord:
    if record.state is HandlerState.NOT_INSTALLED:
        return record
    state = HandlerState.ENABLED if record.any_enabled else HandlerState.INSTALLED
    return record.replace(state=state)


def _advance_upgrade(
    record: HandlerRecord,
    target: HandlerTarget,
    step: Step,
    outcome: Outcome,
    upgrade: UpgradeRecord,
) -> tuple[HandlerRecord, bool]:
    kind = step.kind
    excused = target.continue_on_update_failure
    fingerprint = target.handler_fingerprint
    if kind is StepKind.DISABLE:
        assert step.extension is not None
        current = record.extension(step.extension) or ExtensionRecord(name=step.extension)
        codes = {**upgrade.disable_exit_codes, step.extension: outcome.exit_code}
        record = record.replace(upgrade=upgrade.replace(disable_exit_codes=codes))
        if not outcome.ok and not excused:
            # Still enabled: the disable runs again once the target changes.
            return record.replace(failed=fingerprint), False
        # No longer at its old target: should the upgrade be abandoned, it is enabled again.
        record = record.with_extension(current.replace(enabled=False, converged=None))
        return _with_state(record), True
    if kind is StepKind.UPGRADE_DISABLED:
        return record.replace(upgrade=upgrade.replace(phase=UpgradePhase.OLD_DISABLED)), True
    if kind is StepKind.COPY_STATE:
        return record.replace(upgrade=upgrade.replace(phase=UpgradePhase.STATE_COPIED)), True
    if kind is StepKind.UPDATE:
        if not outcome.ok:
            failed = upgrade.replace(failed=True)
            return record.replace(upgrade=failed, failed=fingerprint), False
        updated = upgrade.replace(phase=UpgradePhase.UPDATED, failed=False)
        return record.replace(upgrade=updated), True
    if kind is StepKind.UNINSTALL:
        record = record.replace(
            uninstall_exit_code=outcome.exit_code,
            upgrade=upgrade.replace(phase=UpgradePhase.OLD_UNINSTALLED),
        )
        if not outcome.ok and not excused:
            return record.replace(failed=fingerprint), False
        return record, True
    # The new version's install (or the marker standing for it): the upgrade is over.
    if kind is StepKind.INSTALL and not outcome.ok:
        return record.replace(upgrade=None, failed=fingerprint), False
    return record.replace(state=HandlerState.INSTALLED, upgrade=None, failed=None), True
