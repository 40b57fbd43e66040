"""The planner, rule by rule: exact step sequences for every lifecycle of the protocol
(docs/protocol.md#lifecycle, docs/runtime.md#steps)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pytest
from exthandler_sdk.protocol import NOT_RUN

from exthandler._model import HandlerName, RequestedState, Version
from exthandler._plan.planner import (
    ExtensionRecord,
    ExtensionTarget,
    HandlerRecord,
    HandlerState,
    HandlerTarget,
    Outcome,
    Step,
    StepKind,
    UpgradePhase,
    UpgradeRecord,
    advance,
    next_step,
)
from tests.runtime.planning import plan

H = HandlerName.parse("Contoso.Agent")
V1 = Version.parse("1.0")
V2 = Version.parse("1.1")
V3 = Version.parse("1.2.3")

ENABLED = RequestedState.ENABLED
DISABLED = RequestedState.DISABLED
UNINSTALL = RequestedState.UNINSTALL

Sig = tuple[str, str, str | None]
Outcomes = Mapping[Sig, Outcome]

# Steps written as (kind, version dir, extension).
FETCH_1: Sig = ("fetch", "1.0", None)
FETCH_2: Sig = ("fetch", "1.1", None)
FETCH_3: Sig = ("fetch", "1.2.3", None)
INSTALL_1: Sig = ("install", "1.0", None)
INSTALL_2: Sig = ("install", "1.1", None)
INSTALL_3: Sig = ("install", "1.2.3", None)
UNINSTALL_1: Sig = ("uninstall", "1.0", None)
UNINSTALL_2: Sig = ("uninstall", "1.1", None)
REMOVE_1: Sig = ("remove-dir", "1.0", None)
REMOVE_2: Sig = ("remove-dir", "1.1", None)
REMOVE_3: Sig = ("remove-dir", "1.2.3", None)


def ext(
    name: str = "a",
    state: RequestedState = ENABLED,
    seq: int = 0,
    digest: str = "d0",
    force: str | None = None,
) -> ExtensionTarget:
    return ExtensionTarget(
        name=name, state=state, sequence_number=seq, settings_digest=digest, force_update_tag=force
    )


def tgt(
    version: Version | None = V1,
    *exts: ExtensionTarget,
    boot: str = "boot-1",
    with_install: bool = True,
    cont: bool = False,
    multi: bool = False,
) -> HandlerTarget:
    return HandlerTarget(
        handler=H,
        version=version,
        extensions=exts or (ext(),),
        boot_id=boot,
        update_with_install=with_install,
        continue_on_update_failure=cont,
        multi_config=multi,
    )


def sig(step: Step) -> Sig:
    return (str(step.kind), str(step.version), step.extension)


def enable(name: str, version: str) -> Sig:
    return ("enable", version, name)


def disable(name: str, version: str) -> Sig:
    return ("disable", version, name)


def converge(name: str, version: str) -> Sig:
    return ("converge", version, name)


def upgrade_disabled(version: str) -> Sig:
    return ("upgrade-disabled", version, None)


def install_skipped(version: str) -> Sig:
    return ("upgrade-install-skipped", version, None)


def update(version: str) -> Sig:
    return ("update", version, None)


def copy_state(version: str) -> Sig:
    return ("copy-state", version, None)


def fail(exit_code: str = "1", code: int = 1009) -> Outcome:
    return Outcome(ok=False, exit_code=exit_code, code=code)


def ok_for(step: Step) -> Outcome:
    return Outcome(ok=True, exit_code="0" if step.kind.runs_command else NOT_RUN)


def drive(
    record: HandlerRecord, target: HandlerTarget, outcomes: Outcomes | None = None
) -> tuple[HandlerRecord, list[Step]]:
    """Drive `record` towards `target` like the engine does; every step ran, in order."""
    outcomes = outcomes or {}
    steps: list[Step] = []
    for _ in range(100):
        step = next_step(record, target)
        if step is None:
            return record, steps
        steps.append(step)
        record, go_on = advance(record, target, step, outcomes.get(sig(step)) or ok_for(step))
        if not go_on:
            return record, steps
    raise AssertionError(f"no end: {[sig(s) for s in steps]}")


def sigs(steps: list[Step]) -> list[Sig]:
    return [sig(s) for s in steps]


def commands(steps: list[Step]) -> list[Sig]:
    quiet = (StepKind.CONVERGE, StepKind.UPGRADE_DISABLED, StepKind.UPGRADE_INSTALL_SKIPPED)
    return [sig(s) for s in steps if s.kind not in quiet]


def installed(target: HandlerTarget) -> HandlerRecord:
    """The record of `target` reached from nothing (disabled ones: enabled, then disabled)."""
    record = HandlerRecord(handler=H)
    if all(e.state is DISABLED for e in target.extensions):
        enabled = tuple(e.replace(state=RequestedState.ENABLED) for e in target.extensions)
        record, _ = drive(record, target.replace(extensions=enabled))
    record, _ = drive(record, target)
    assert plan(record, target) == []
    return record


def run_until(
    record: HandlerRecord, target: HandlerTarget, stop: Callable[[Step], bool]
) -> HandlerRecord:
    """Run successful steps until the next one satisfies `stop` (which is not run)."""
    for _ in range(100):
        step = next_step(record, target)
        assert step is not None, "the stop step never came"
        if stop(step):
            return record
        record, go_on = advance(record, target, step, ok_for(step))
        assert go_on
    raise AssertionError("no end")


def env(step: Step) -> dict[str, str]:
    return dict(step.env)


def find(steps: list[Step], kind: StepKind, version: Version | None = None) -> Step:
    return next(s for s in steps if s.kind is kind and (version is None or s.version == version))


# -- single version ---------------------------------------------------------------------------


def test_fresh_install_fetches_installs_enables() -> None:
    record = HandlerRecord(handler=H)
    assert record.empty
    steps = plan(record, tgt())
    assert sigs(steps) == [FETCH_1, INSTALL_1, enable("a", "1.0")]
    assert steps[0].source is None
    assert env(steps[1]) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": NOT_RUN}
    assert env(steps[2]) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": NOT_RUN}
    record = installed(tgt())
    assert record.version == V1
    assert record.state is HandlerState.ENABLED
    assert record.extensions == (
        ExtensionRecord(
            name="a",
            sequence_number=0,
            settings_digest="d0",
            enabled=True,
            converged=tgt().fingerprint(ext()),
        ),
    )
    assert record.upgrade is None
    assert record.failed is None
    assert not record.empty


def test_a_disabled_extension_never_installed_runs_nothing() -> None:
    """Disable acts only on an installed handler: nothing is fetched or installed."""
    target = tgt(V1, ext(state=DISABLED))
    record, steps = drive(HandlerRecord(handler=H), target)
    assert steps == []
    assert record.empty
    multi = tgt(V1, ext("a", DISABLED), ext("b", DISABLED), multi=True)
    assert plan(HandlerRecord(handler=H), multi) == []
    # One enabled extension is enough to install the handler.
    mixed = tgt(V1, ext("a", DISABLED), ext("b"), multi=True)
    assert sigs(plan(HandlerRecord(handler=H), mixed))[:2] == [FETCH_1, INSTALL_1]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(tgt(), id="enabled"),
        pytest.param(tgt(V1, ext(state=DISABLED)), id="disabled"),
        pytest.param(tgt(V1, ext("a"), ext("b", DISABLED), multi=True), id="multi"),
    ],
)
def test_an_unchanged_target_runs_nothing(target: HandlerTarget) -> None:
    record = installed(target)
    assert next_step(record, target) is None
    assert plan(record, target) == []


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        pytest.param(tgt(V1, ext(seq=1, digest="d1")), [enable("a", "1.0")], id="settings"),
        pytest.param(tgt(V1, ext(seq=1)), [enable("a", "1.0")], id="sequence-only"),
        pytest.param(tgt(V1, ext(force="t1")), [enable("a", "1.0")], id="force-tag"),
        pytest.param(tgt(V1, boot="boot-2"), [enable("a", "1.0")], id="reboot"),
        pytest.param(tgt(V1, ext(state=DISABLED)), [disable("a", "1.0")], id="disable"),
        pytest.param(tgt(V1, with_install=False, cont=True), [], id="manifest-flags-only"),
        pytest.param(tgt(V1, multi=True), [], id="multi-flag-only"),
    ],
)
def test_changes_of_an_enabled_extension(changed: HandlerTarget, expected: list[Sig]) -> None:
    record = installed(tgt())
    steps = plan(record, changed)
    assert sigs(steps) == expected
    for step in steps:
        if step.kind is StepKind.ENABLE:
            # Not the first enable of this version: the uninstall exit code is not news.
            assert env(step) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": NOT_RUN}
    record, _ = drive(record, changed)
    assert plan(record, changed) == []


def test_settings_change_records_the_new_sequence_number() -> None:
    record = installed(tgt())
    changed = tgt(V1, ext(seq=7, digest="d7"))
    record, _ = drive(record, changed)
    assert record.extension("a") == ExtensionRecord(
        name="a",
        sequence_number=7,
        settings_digest="d7",
        enabled=True,
        converged=changed.fingerprint(ext(seq=7, digest="d7")),
    )


def test_the_same_force_tag_twice_runs_once() -> None:
    record = installed(tgt(V1, ext(force="t1")))
    assert plan(record, tgt(V1, ext(force="t1"))) == []
    assert sigs(plan(record, tgt(V1, ext(force="t2")))) == [enable("a", "1.0")]
    assert sigs(plan(record, tgt(V1, ext(force=None)))) == [enable("a", "1.0")]


def test_reboot_reenables_only_enabled_extensions() -> None:
    before = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record = installed(before)
    after = before.replace(boot_id="boot-2")
    assert sigs(plan(record, after)) == [enable("a", "1.0"), enable("c", "1.0")]


def test_disabled_extension_is_not_touched_by_reboot_and_comes_back_with_enable() -> None:
    record = installed(tgt())
    record, steps = drive(record, tgt(V1, ext(state=DISABLED)))
    assert sigs(steps) == [disable("a", "1.0")]
    assert record.state is HandlerState.INSTALLED
    assert not record.any_enabled
    assert plan(record, tgt(V1, ext(state=DISABLED), boot="boot-2")) == []
    record, steps = drive(record, tgt(V1, ext(state=ENABLED)))
    assert sigs(steps) == [enable("a", "1.0")]
    assert record.state is HandlerState.ENABLED


def test_disabled_again_with_new_settings_only_records_them() -> None:
    record = installed(tgt(V1, ext(state=DISABLED)))
    record, steps = drive(record, tgt(V1, ext(state=DISABLED, seq=1, digest="d1")))
    assert sigs(steps) == [converge("a", "1.0")]
    assert record.extension("a") is not None
    assert record.extension("a") == record.extensions[0].replace(
        sequence_number=1, settings_digest="d1", enabled=False
    )


# -- removal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "removal",
    [
        pytest.param(tgt(None), id="version-none"),
        pytest.param(HandlerTarget(handler=H, version=None), id="bare"),
        pytest.param(tgt(V1, ext(state=UNINSTALL)), id="all-uninstall"),
        pytest.param(tgt(V2, ext(state=UNINSTALL)), id="all-uninstall-other-version"),
        pytest.param(
            tgt(V1, ext("a", UNINSTALL), ext("b", UNINSTALL), multi=True), id="multi-uninstall"
        ),
    ],
)
def test_removal_of_an_enabled_handler(removal: HandlerTarget) -> None:
    assert removal.removes_handler
    record, steps = drive(installed(tgt()), removal)
    assert sigs(steps) == [disable("a", "1.0"), UNINSTALL_1, REMOVE_1]
    assert record.empty
    assert record == HandlerRecord(handler=H)
    assert plan(record, removal) == []


def test_removal_of_a_disabled_handler_runs_no_disable() -> None:
    record, steps = drive(installed(tgt(V1, ext(state=DISABLED))), tgt(None))
    assert sigs(steps) == [UNINSTALL_1, REMOVE_1]
    assert record.empty


def test_removal_disables_every_enabled_extension_first() -> None:
    before = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record, steps = drive(installed(before), tgt(None))
    assert sigs(steps) == [disable("a", "1.0"), disable("c", "1.0"), UNINSTALL_1, REMOVE_1]
    assert record.empty


def test_removal_goes_on_whatever_the_commands_say() -> None:
    outcomes = {disable("a", "1.0"): fail("3", 1010), UNINSTALL_1: fail("4", 1000)}
    record, steps = drive(installed(tgt()), tgt(None), outcomes)
    assert sigs(steps) == [disable("a", "1.0"), UNINSTALL_1, REMOVE_1]
    assert record.empty


def test_removal_of_nothing_runs_nothing() -> None:
    assert plan(HandlerRecord(handler=H), tgt(None)) == []


def test_removal_of_a_fetched_but_not_installed_version_only_deletes_the_dir() -> None:
    record, _ = drive(HandlerRecord(handler=H), tgt(), {INSTALL_1: fail("2", 1007)})
    assert record.version == V1
    assert record.state is HandlerState.NOT_INSTALLED
    record, steps = drive(record, tgt(None))
    assert sigs(steps) == [REMOVE_1]
    assert record.empty


def test_removal_after_a_failed_fetch_forgets_the_failure() -> None:
    record, _ = drive(HandlerRecord(handler=H), tgt(), {FETCH_1: fail("1004", 1004)})
    assert record.failed is not None
    assert not record.empty
    record, steps = drive(record, tgt(None))
    assert sigs(steps) == [REMOVE_1]  # also drops whatever a failed extraction left
    assert record.empty
    # The same goal coming back is a new request: it is tried again.
    assert sigs(plan(record, tgt())) == [FETCH_1, INSTALL_1, enable("a", "1.0")]


def test_handler_without_extensions_counts_as_removed() -> None:
    target = HandlerTarget(handler=H, version=V1)
    assert target.removes_handler
    record, steps = drive(installed(tgt()), target)
    assert sigs(steps) == [disable("a", "1.0"), UNINSTALL_1, REMOVE_1]
    assert record.empty


# -- failures of a single version -------------------------------------------------------------


def test_fetch_failure_stops_and_is_retried_only_when_the_target_changes() -> None:
    record, steps = drive(HandlerRecord(handler=H), tgt(), {FETCH_1: fail("1004", 1004)})
    assert sigs(steps) == [FETCH_1]
    assert record.version is None
    assert record.failed == tgt().handler_fingerprint
    assert next_step(record, tgt()) is None
    assert sigs(plan(record, tgt(V1, ext(seq=1)))) == [FETCH_1, INSTALL_1, enable("a", "1.0")]
    record, _ = drive(record, tgt(V1, ext(seq=1)))
    assert record.failed is None


def test_install_failure_runs_no_enable_and_is_retried_when_the_target_changes() -> None:
    record, steps = drive(HandlerRecord(handler=H), tgt(), {INSTALL_1: fail("5", 1007)})
    assert sigs(steps) == [FETCH_1, INSTALL_1]
    assert record.state is HandlerState.NOT_INSTALLED
    assert record.failed == tgt().handler_fingerprint
    assert next_step(record, tgt()) is None
    assert next_step(record, tgt(V1, boot="boot-1")) is None
    record, steps = drive(record, tgt(V1, ext(seq=1)))
    assert sigs(steps) == [INSTALL_1, enable("a", "1.0")]
    assert record.state is HandlerState.ENABLED
    # The failure is forgotten once the install succeeded: the old goal is not blocked.
    assert record.failed is None
    assert sigs(plan(record, tgt())) == [enable("a", "1.0")]


def test_enable_failure_is_recorded_and_not_retried_for_the_same_target() -> None:
    record, steps = drive(HandlerRecord(handler=H), tgt(), {enable("a", "1.0"): fail("9")})
    assert sigs(steps) == [FETCH_1, INSTALL_1, enable("a", "1.0")]
    assert record.state is HandlerState.INSTALLED
    current = record.extension("a")
    assert current is not None
    assert not current.enabled
    assert current.converged == tgt().fingerprint(ext())
    assert next_step(record, tgt()) is None
    # Retried on any change; it is still the version's first enable.
    step = next_step(record, tgt(V1, ext(seq=1)))
    assert step is not None
    assert sig(step) == enable("a", "1.0")
    assert sigs(plan(record, tgt(V1, boot="boot-2"))) == [enable("a", "1.0")]


def test_a_failed_reenable_leaves_the_extension_enabled() -> None:
    # The enable command failing does not disable an extension that was enabled: a later
    # disable or removal must still run its disable command.
    record = installed(tgt())
    record, _ = drive(record, tgt(V1, ext(seq=1)), {enable("a", "1.0"): fail("9")})
    current = record.extension("a")
    assert current is not None
    assert current.enabled
    assert record.state is HandlerState.ENABLED
    assert sigs(plan(record, tgt(V1, ext(state=DISABLED)))) == [disable("a", "1.0")]
    assert sigs(plan(record, tgt(None))) == [disable("a", "1.0"), UNINSTALL_1, REMOVE_1]


def test_disable_failure_stops_and_is_retried_when_the_target_changes() -> None:
    record = installed(tgt())
    target = tgt(V1, ext(state=DISABLED))
    record, steps = drive(record, target, {disable("a", "1.0"): fail("3", 1010)})
    assert sigs(steps) == [disable("a", "1.0")]
    assert record.state is HandlerState.ENABLED
    assert next_step(record, target) is None
    assert sigs(plan(record, tgt(V1, ext(state=DISABLED, seq=1)))) == [disable("a", "1.0")]


def test_a_failing_extension_stops_the_others_until_the_next_pass() -> None:
    target = tgt(V1, ext("a"), ext("b"), multi=True)
    record, steps = drive(HandlerRecord(handler=H), target, {enable("a", "1.0"): fail()})
    assert sigs(steps)[-1] == enable("a", "1.0")
    record, steps = drive(record, target)
    assert sigs(steps) == [enable("b", "1.0")]


# -- multi-config -----------------------------------------------------------------------------


def test_multi_config_install_enables_and_converges_each_extension() -> None:
    target = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record, steps = drive(HandlerRecord(handler=H), target)
    assert sigs(steps) == [
        FETCH_1,
        INSTALL_1,
        enable("a", "1.0"),
        converge("b", "1.0"),
        enable("c", "1.0"),
    ]
    assert {e.name: e.enabled for e in record.extensions} == {"a": True, "b": False, "c": True}
    assert record.state is HandlerState.ENABLED


def test_multi_config_each_extension_changes_on_its_own() -> None:
    before = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record = installed(before)
    after = tgt(V1, ext("a", DISABLED), ext("b"), ext("c", seq=0), multi=True)
    record, steps = drive(record, after)
    assert sigs(steps) == [disable("a", "1.0"), enable("b", "1.0")]
    assert {e.name: e.enabled for e in record.extensions} == {"a": False, "b": True, "c": True}


def test_an_extension_dropped_from_the_target_is_disabled_and_forgotten() -> None:
    before = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record = installed(before)
    after = tgt(V1, ext("a"), multi=True)
    record, steps = drive(record, after)
    assert sigs(steps) == [converge("b", "1.0"), disable("c", "1.0")]
    assert [e.name for e in record.extensions] == ["a"]
    assert record.state is HandlerState.ENABLED
    assert plan(record, after) == []


def test_a_dropped_extension_is_forgotten_even_when_its_disable_fails() -> None:
    record = installed(tgt(V1, ext("a"), ext("c"), multi=True))
    after = tgt(V1, ext("a"), multi=True)
    record, steps = drive(record, after, {disable("c", "1.0"): fail("3", 1010)})
    assert sigs(steps) == [disable("c", "1.0")]
    assert [e.name for e in record.extensions] == ["a"]


def test_a_renamed_single_config_extension_replaces_the_old() -> None:
    record = installed(tgt(V1, ext("old")))
    record, steps = drive(record, tgt(V1, ext("new")))
    assert sigs(steps) == [disable("old", "1.0"), enable("new", "1.0")]
    assert [e.name for e in record.extensions] == ["new"]


def test_one_extension_uninstalled_of_several_is_disabled_but_the_handler_stays() -> None:
    record = installed(tgt(V1, ext("a"), ext("b"), multi=True))
    after = tgt(V1, ext("a"), ext("b", UNINSTALL), multi=True)
    assert not after.removes_handler
    record, steps = drive(record, after)
    assert sigs(steps) == [disable("b", "1.0")]
    assert record.version == V1
    assert plan(record, after) == []


# -- upgrade ----------------------------------------------------------------------------------


MARK_DISABLED_1 = upgrade_disabled("1.0")
UPGRADE_FROM_ENABLED = [
    FETCH_2,
    disable("a", "1.0"),
    MARK_DISABLED_1,
    copy_state("1.1"),
    update("1.1"),
    UNINSTALL_1,
    REMOVE_1,
    INSTALL_2,
    enable("a", "1.1"),
]


def test_upgrade_runs_in_protocol_order() -> None:
    record = installed(tgt())
    steps = plan(record, tgt(V2))
    assert sigs(steps) == UPGRADE_FROM_ENABLED
    assert steps[0].source == V1
    copy = find(steps, StepKind.COPY_STATE)
    assert (copy.source, copy.target) == (V1, V2)
    upd = find(steps, StepKind.UPDATE)
    assert (upd.version, upd.source, upd.target) == (V2, V1, V2)
    assert env(upd) == {
        "VERSION": "1.1",
        "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": "1.0",
        "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE": "0",
    }
    assert upd.describe() == "update Contoso.Agent 1.0 -> 1.1"
    assert env(find(steps, StepKind.INSTALL)) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "0"}
    assert env(find(steps, StepKind.ENABLE)) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "0"}
    record, _ = drive(record, tgt(V2))
    assert record.version == V2
    assert record.state is HandlerState.ENABLED
    assert record.upgrade is None
    assert record.uninstall_exit_code == "0"
    assert plan(record, tgt(V2)) == []


def test_upgrade_phases_are_recorded_in_order() -> None:
    record = installed(tgt())
    phases: list[UpgradePhase | None] = []
    target = tgt(V2)
    for _ in range(20):
        step = next_step(record, target)
        if step is None:
            break
        record, _ = advance(record, target, step, ok_for(step))
        phases.append(None if record.upgrade is None else record.upgrade.phase)
    assert phases == [
        UpgradePhase.FETCHED,
        UpgradePhase.FETCHED,  # old.disable of the one enabled extension
        UpgradePhase.OLD_DISABLED,
        UpgradePhase.STATE_COPIED,
        UpgradePhase.UPDATED,
        UpgradePhase.OLD_UNINSTALLED,
        UpgradePhase.OLD_REMOVED,
        None,
        None,
    ]


def test_upgrade_passes_exit_codes_on() -> None:
    record = installed(tgt())
    target = tgt(V2, cont=True)
    outcomes = {disable("a", "1.0"): fail("7", 1010), UNINSTALL_1: fail("8", 1000)}
    record, steps = drive(record, target, outcomes)
    assert sigs(steps) == UPGRADE_FROM_ENABLED
    assert env(find(steps, StepKind.UPDATE))["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "7"
    assert env(find(steps, StepKind.INSTALL)) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "8"}
    assert env(find(steps, StepKind.ENABLE)) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "8"}
    assert record.failed is None
    # A later settings change is not the first enable of the version any more.
    step = next_step(record, tgt(V2, ext(seq=1), cont=True))
    assert step is not None
    assert sig(step) == enable("a", "1.1")
    assert env(step) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": NOT_RUN}


def test_upgrade_from_a_disabled_handler_runs_no_disable() -> None:
    record = installed(tgt(V1, ext(state=DISABLED)))
    target = tgt(V2, ext(state=DISABLED))
    steps = plan(record, target)
    assert commands(steps) == [
        FETCH_2,
        copy_state("1.1"),
        update("1.1"),
        UNINSTALL_1,
        REMOVE_1,
        INSTALL_2,
    ]
    assert sigs(steps)[1] == upgrade_disabled("1.0")
    upd = find(steps, StepKind.UPDATE)
    assert env(upd)["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == NOT_RUN
    record, _ = drive(record, target)
    assert record.state is HandlerState.INSTALLED
    assert plan(record, target) == []


def test_upgrade_without_install() -> None:
    record = installed(tgt())
    target = tgt(V2, with_install=False)
    steps = plan(record, target)
    assert commands(steps) == [
        FETCH_2,
        disable("a", "1.0"),
        copy_state("1.1"),
        update("1.1"),
        UNINSTALL_1,
        REMOVE_1,
        enable("a", "1.1"),
    ]
    assert install_skipped("1.1") in sigs(steps)
    assert env(find(steps, StepKind.ENABLE)) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "0"}
    record, _ = drive(record, target)
    assert record.version == V2
    assert record.state is HandlerState.ENABLED


def test_downgrade_runs_the_higher_versions_update() -> None:
    record = installed(tgt(V2))
    steps = plan(record, tgt(V1))
    assert sigs(steps) == [
        FETCH_1,
        disable("a", "1.1"),
        upgrade_disabled("1.1"),
        copy_state("1.0"),
        update("1.1"),
        UNINSTALL_2,
        REMOVE_2,
        INSTALL_1,
        enable("a", "1.0"),
    ]
    upd = find(steps, StepKind.UPDATE)
    assert (upd.version, upd.source, upd.target) == (V2, V2, V1)
    assert env(upd)["VERSION"] == "1.0"
    assert env(upd)["AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"] == "1.1"


def test_the_same_version_spelled_otherwise_is_no_upgrade() -> None:
    """Missing parts count as 0: an installed 1.0 already is the 1.0.0 a goal asks for."""
    record = installed(tgt(V1))
    steps = plan(record, tgt(Version.parse("1.0.0")))
    assert all(s.kind is not StepKind.FETCH and str(s.version) == "1.0" for s in steps)
    assert sigs(plan(record, tgt(Version.parse("1.0.0.1"))))[0] == ("fetch", "1.0.0.1", None)


def test_multi_config_upgrade_passes_every_disable_exit_code() -> None:
    before = tgt(V1, ext("a"), ext("b", DISABLED), ext("c"), multi=True)
    record = installed(before)
    target = tgt(V2, ext("a"), ext("b", DISABLED), ext("c"), multi=True, cont=True)
    outcomes = {disable("c", "1.0"): fail("6", 1010)}
    record, steps = drive(record, target, outcomes)
    assert commands(steps) == [
        FETCH_2,
        disable("a", "1.0"),
        disable("c", "1.0"),
        copy_state("1.1"),
        update("1.1"),
        UNINSTALL_1,
        REMOVE_1,
        INSTALL_2,
        enable("a", "1.1"),
        enable("c", "1.1"),
    ]
    upd = env(find(steps, StepKind.UPDATE))
    assert upd["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "6"
    assert json.loads(upd["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS"]) == [
        {"extensionName": "a", "exitCode": "0"},
        {"extensionName": "c", "exitCode": "6"},
    ]
    assert {e.name: e.enabled for e in record.extensions} == {"a": True, "b": False, "c": True}


def test_multi_config_upgrade_of_disabled_extensions_lists_no_codes() -> None:
    before = tgt(V1, ext("a", DISABLED), multi=True)
    steps = plan(installed(before), tgt(V2, ext("a", DISABLED), multi=True))
    upd = env(find(steps, StepKind.UPDATE))
    assert upd["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == NOT_RUN
    assert upd["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS"] == "[]"


def test_single_config_update_has_no_multi_extension_variable() -> None:
    upd = find(plan(installed(tgt()), tgt(V2)), StepKind.UPDATE)
    assert "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS" not in env(upd)


def test_failed_update_stops_with_failed_upgrade() -> None:
    record = installed(tgt())
    target = tgt(V2, cont=True)  # continueOnUpdateFailure never excuses the update itself
    record, steps = drive(record, target, {update("1.1"): fail("2", 1008)})
    assert sigs(steps) == UPGRADE_FROM_ENABLED[:5]
    assert record.upgrade is not None
    assert record.upgrade.failed
    assert record.upgrade.phase is UpgradePhase.STATE_COPIED
    assert record.version == V1
    assert record.failed == target.handler_fingerprint
    assert next_step(record, target) is None
    # A changed target tries the update again and completes the upgrade.
    changed = tgt(V2, ext(seq=1), cont=True)
    record, steps = drive(record, changed)
    assert sigs(steps) == [update("1.1"), UNINSTALL_1, REMOVE_1, INSTALL_2, enable("a", "1.1")]
    assert env(steps[0])["AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"] == "0"
    assert record.upgrade is None
    assert record.version == V2
    assert record.failed is None


def test_failed_update_then_another_version() -> None:
    record = installed(tgt())
    record, _ = drive(record, tgt(V2), {update("1.1"): fail("2", 1008)})
    record, steps = drive(record, tgt(V3))
    assert commands(steps) == [
        REMOVE_2,
        FETCH_3,
        copy_state("1.2.3"),
        update("1.2.3"),
        UNINSTALL_1,
        REMOVE_1,
        INSTALL_3,
        enable("a", "1.2.3"),
    ]
    assert record.version == V3


def test_failed_update_then_back_to_the_old_version_reenables_it() -> None:
    record = installed(tgt())
    record, _ = drive(record, tgt(V2), {update("1.1"): fail("2", 1008)})
    record, steps = drive(record, tgt(V1))
    assert sigs(steps) == [REMOVE_2, enable("a", "1.0")]
    assert record.version == V1
    assert record.state is HandlerState.ENABLED
    assert plan(record, tgt(V1)) == []


def test_failed_update_then_removal() -> None:
    record = installed(tgt())
    record, _ = drive(record, tgt(V2), {update("1.1"): fail("2", 1008)})
    record, steps = drive(record, tgt(None))
    assert sigs(steps) == [REMOVE_2, UNINSTALL_1, REMOVE_1]
    assert record.empty


def test_failed_old_disable_stops_the_upgrade_without_the_flag() -> None:
    record = installed(tgt())
    record, steps = drive(record, tgt(V2), {disable("a", "1.0"): fail("3", 1010)})
    assert sigs(steps) == [FETCH_2, disable("a", "1.0")]
    assert record.failed == tgt(V2).handler_fingerprint
    assert next_step(record, tgt(V2)) is None
    # Retried, disable included, once the target changes.
    assert sigs(plan(record, tgt(V2, ext(seq=1)))) == UPGRADE_FROM_ENABLED[1:]


def test_failed_old_uninstall_stops_the_upgrade_without_the_flag() -> None:
    record = installed(tgt())
    record, steps = drive(record, tgt(V2), {UNINSTALL_1: fail("4", 1000)})
    assert sigs(steps) == UPGRADE_FROM_ENABLED[:6]
    assert record.failed == tgt(V2).handler_fingerprint
    assert next_step(record, tgt(V2)) is None
    steps = plan(record, tgt(V2, ext(seq=1)))
    assert sigs(steps) == [REMOVE_1, INSTALL_2, enable("a", "1.1")]
    assert env(steps[1]) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "4"}


def test_failed_new_install_stops_and_is_retried_when_the_target_changes() -> None:
    record = installed(tgt())
    record, steps = drive(record, tgt(V2), {INSTALL_2: fail("5", 1007)})
    assert sigs(steps) == UPGRADE_FROM_ENABLED[:8]
    assert record.upgrade is None
    assert record.version == V2
    assert record.state is HandlerState.NOT_INSTALLED
    assert next_step(record, tgt(V2)) is None
    steps = plan(record, tgt(V2, ext(seq=1)))
    assert sigs(steps) == [INSTALL_2, enable("a", "1.1")]
    assert env(steps[0]) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "0"}
    assert env(steps[1]) == {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": "0"}


def test_failed_fetch_of_the_new_version_keeps_the_old_one() -> None:
    record = installed(tgt())
    record, steps = drive(record, tgt(V2), {FETCH_2: fail("1004", 1004)})
    assert sigs(steps) == [FETCH_2]
    assert record.upgrade is None
    assert record.version == V1
    assert record.state is HandlerState.ENABLED
    assert next_step(record, tgt(V2)) is None
    assert sigs(plan(record, tgt(V2, ext(seq=1)))) == UPGRADE_FROM_ENABLED


def test_never_installed_version_is_replaced_not_upgraded() -> None:
    # Nothing ran in the old dir, so there is nothing to update from or uninstall.
    record, _ = drive(HandlerRecord(handler=H), tgt(), {INSTALL_1: fail("5", 1007)})
    record, steps = drive(record, tgt(V2))
    assert sigs(steps) == [REMOVE_1, FETCH_2, INSTALL_2, enable("a", "1.1")]
    assert steps[1].source is None
    assert record.version == V2
    assert record.state is HandlerState.ENABLED


# -- the goal moving during an upgrade --------------------------------------------------------

BEFORE_OLD_UNINSTALL = [
    pytest.param(lambda s: s.kind is StepKind.DISABLE, id="fetched"),
    pytest.param(lambda s: s.kind is StepKind.COPY_STATE, id="old-disabled"),
    pytest.param(lambda s: s.kind is StepKind.UPDATE, id="state-copied"),
    pytest.param(lambda s: s.kind is StepKind.UNINSTALL, id="updated"),
]
AFTER_OLD_UNINSTALL = [
    pytest.param(
        lambda s: s.kind is StepKind.REMOVE_DIR, [REMOVE_1, INSTALL_2], id="old-uninstalled"
    ),
    pytest.param(lambda s: s.kind is StepKind.INSTALL, [INSTALL_2], id="old-removed"),
]


@pytest.mark.parametrize("stop", BEFORE_OLD_UNINSTALL)
def test_goal_moves_on_before_the_old_is_uninstalled(stop: Callable[[Step], bool]) -> None:
    record = run_until(installed(tgt()), tgt(V2), stop)
    assert record.upgrade is not None
    record, steps = drive(record, tgt(V3))
    disables = (
        [disable("a", "1.0")] if stop(Step(kind=StepKind.DISABLE, handler=H, version=V1)) else []
    )
    assert commands(steps) == [
        REMOVE_2,
        FETCH_3,
        *disables,
        copy_state("1.2.3"),
        update("1.2.3"),
        UNINSTALL_1,
        REMOVE_1,
        INSTALL_3,
        enable("a", "1.2.3"),
    ]
    assert record.version == V3
    assert record.upgrade is None
    assert plan(record, tgt(V3)) == []


@pytest.mark.parametrize(("stop", "finish"), AFTER_OLD_UNINSTALL)
def test_goal_moves_on_after_the_old_is_uninstalled(
    stop: Callable[[Step], bool], finish: list[Sig]
) -> None:
    record = run_until(installed(tgt()), tgt(V2), stop)
    record, steps = drive(record, tgt(V3))
    assert commands(steps) == [
        *finish,
        ("fetch", "1.2.3", None),
        copy_state("1.2.3"),
        update("1.2.3"),
        UNINSTALL_2,
        REMOVE_2,
        INSTALL_3,
        enable("a", "1.2.3"),
    ]
    assert record.version == V3
    assert plan(record, tgt(V3)) == []


@pytest.mark.parametrize("stop", BEFORE_OLD_UNINSTALL)
def test_goal_moves_back_to_the_old_version(stop: Callable[[Step], bool]) -> None:
    record = run_until(installed(tgt()), tgt(V2), stop)
    record, steps = drive(record, tgt(V1))
    was_disabled = not stop(Step(kind=StepKind.DISABLE, handler=H, version=V1))
    assert sigs(steps) == [REMOVE_2, *([enable("a", "1.0")] if was_disabled else [])]
    assert record.version == V1
    assert record.state is HandlerState.ENABLED
    assert plan(record, tgt(V1)) == []


@pytest.mark.parametrize("stop", BEFORE_OLD_UNINSTALL)
def test_removal_while_an_upgrade_is_half_done_before_the_old_is_uninstalled(
    stop: Callable[[Step], bool],
) -> None:
    record = run_until(installed(tgt()), tgt(V2), stop)
    record, steps = drive(record, tgt(None))
    still_enabled = stop(Step(kind=StepKind.DISABLE, handler=H, version=V1))
    disables = [disable("a", "1.0")] if still_enabled else []
    assert sigs(steps) == [REMOVE_2, *disables, UNINSTALL_1, REMOVE_1]
    assert record.empty


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        pytest.param(
            lambda s: s.kind is StepKind.REMOVE_DIR, [REMOVE_1, REMOVE_2], id="old-uninstalled"
        ),
        pytest.param(lambda s: s.kind is StepKind.INSTALL, [REMOVE_2], id="old-removed"),
    ],
)
def test_removal_while_an_upgrade_is_half_done_after_the_old_is_uninstalled(
    stop: Callable[[Step], bool], expected: list[Sig]
) -> None:
    record = run_until(installed(tgt()), tgt(V2), stop)
    record, steps = drive(record, tgt(None))
    assert sigs(steps) == expected  # neither uninstall runs twice nor the new one at all
    assert record.empty


# -- odds and ends ----------------------------------------------------------------------------


def test_plan_stops_at_its_limit() -> None:
    assert len(plan(HandlerRecord(handler=H), tgt(), limit=2)) == 2


def test_describe() -> None:
    steps = plan(installed(tgt()), tgt(V2))
    assert [s.describe() for s in steps] == [
        "fetch Contoso.Agent-1.1",
        "disable a Contoso.Agent-1.0",
        "upgrade-disabled Contoso.Agent-1.0",
        "copy-state Contoso.Agent-1.1",
        "update Contoso.Agent 1.0 -> 1.1",
        "uninstall Contoso.Agent-1.0",
        "remove-dir Contoso.Agent-1.0",
        "install Contoso.Agent-1.1",
        "enable a Contoso.Agent-1.1",
    ]


def test_runs_command() -> None:
    assert {k for k in StepKind if k.runs_command} == {
        StepKind.INSTALL,
        StepKind.ENABLE,
        StepKind.DISABLE,
        StepKind.UPDATE,
        StepKind.UNINSTALL,
    }


def test_fingerprint_ignores_boot_for_non_enabled_extensions() -> None:
    target = tgt()
    assert target.fingerprint(ext(state=DISABLED)) == target.replace(boot_id="other").fingerprint(
        ext(state=DISABLED)
    )
    assert target.fingerprint(ext()) != target.replace(boot_id="other").fingerprint(ext())


def test_record_helpers() -> None:
    record = HandlerRecord(handler=H)
    a, b = ExtensionRecord(name="a", enabled=True), ExtensionRecord(name="b")
    record = record.with_extension(a).with_extension(b)
    assert record.any_enabled
    assert record.extension("b") == b
    assert record.extension("zz") is None
    record = record.with_extension(a.replace(enabled=False))
    assert not record.any_enabled
    assert record.without_extension("a").extensions == (b,)
    assert not HandlerRecord(handler=H, failed="x").empty
    assert not HandlerRecord(handler=H, upgrade=UpgradeRecord(source=V1, target=V2)).empty


def test_extension_steps_never_mark_an_uninstalled_handler_installed() -> None:
    record = HandlerRecord(
        handler=H,
        version=V1,
        state=HandlerState.NOT_INSTALLED,
        extensions=(ExtensionRecord(name="a", enabled=True),),
    )
    step = next_step(record, tgt(None))
    assert step is not None
    assert sig(step) == disable("a", "1.0")
    after, go_on = advance(record, tgt(None), step, ok_for(step))
    assert go_on
    assert after.state is HandlerState.NOT_INSTALLED
    assert not after.any_enabled
