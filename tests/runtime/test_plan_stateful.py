"""The planner against a model of the world: random goals, failures and crashes.

A `World` stands for the disk and the processes: which version dirs exist, which versions
ran their install, which extensions ran their enable. It checks every step the planner
hands out against the protocol's ordering rules, and the record it persists is the only
thing that survives a crash.
"""

from __future__ import annotations

from collections import Counter

import attrs
from exthandler_sdk.protocol import NOT_RUN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exthandler._model import HandlerName, RequestedState, Version
from exthandler._plan.planner import (
    ExtensionTarget,
    HandlerRecord,
    HandlerState,
    HandlerTarget,
    Outcome,
    Step,
    StepKind,
    advance,
    next_step,
)
from tests.runtime.planning import plan

H = HandlerName.parse("Contoso.Agent")
VERSIONS = (Version.parse("1.0"), Version.parse("1.1"), Version.parse("2.0.1"))
MAX_STEPS = 50
MAX_CRASHES = 3

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def targets(draw: st.DrawFn) -> HandlerTarget:
    version = draw(st.sampled_from((*VERSIONS, None)))
    multi = draw(st.booleans())
    if multi:
        names = draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True))
    else:
        names = ["a"]
    exts = []
    for name in names:
        seq = draw(st.integers(0, 2))
        exts.append(
            ExtensionTarget(
                name=name,
                state=draw(st.sampled_from(list(RequestedState))),
                sequence_number=seq,
                settings_digest=f"d{seq}",
                force_update_tag=draw(st.sampled_from([None, "t1"])),
            )
        )
    return HandlerTarget(
        handler=H,
        version=version,
        extensions=tuple(exts),
        boot_id=draw(st.sampled_from(["boot-1", "boot-2"])),
        update_with_install=draw(st.booleans()),
        continue_on_update_failure=draw(st.booleans()),
        multi_config=multi,
    )


def success(step: Step) -> Outcome:
    return Outcome(ok=True, exit_code="0" if step.kind.runs_command else NOT_RUN)


def can_fail(step: Step) -> bool:
    """What the engine may report as failed: fetches and commands."""
    return step.kind is StepKind.FETCH or step.kind.runs_command


@attrs.define
class World:
    """The handler dirs and processes, as the planner's steps leave them."""

    dirs: set[str] = attrs.field(factory=set)
    installed: set[str] = attrs.field(factory=set)  # install ran, uninstall not yet
    enabled: set[tuple[str, str]] = attrs.field(factory=set)  # (version, extension)
    record: HandlerRecord = attrs.field(factory=lambda: HandlerRecord(handler=H))
    ran: list[Step] = attrs.field(factory=list)

    def execute(self, step: Step, outcome: Outcome) -> None:
        """Run `step` on the world, checking it acts only on what exists."""
        version = str(step.version)
        kind = step.kind
        if kind.runs_command or kind is StepKind.COPY_STATE:
            assert version in self.dirs, f"{step.describe()} on a missing dir {self.dirs}"
        if step.source is not None and kind is not StepKind.FETCH:
            assert str(step.source) in self.dirs, step.describe()
        if kind is StepKind.FETCH:
            if outcome.ok:  # extraction is atomic: a failed fetch leaves no dir
                self.dirs.add(version)
        elif kind is StepKind.REMOVE_DIR:
            self.dirs.discard(version)
            self.installed.discard(version)
            self.enabled = {e for e in self.enabled if e[0] != version}
        elif kind is StepKind.INSTALL:
            # In an upgrade the old version is uninstalled before the new one installs.
            assert self.installed <= {version}, f"install {version} while {self.installed}"
            if outcome.ok:
                self.installed.add(version)
        elif kind is StepKind.UNINSTALL:
            self.installed.discard(version)
            self.enabled = {e for e in self.enabled if e[0] != version}
        elif kind is StepKind.UPDATE:
            assert step.source is not None
            assert step.target is not None
            source = str(step.source)
            assert str(step.target) in self.dirs
            # The old version's extensions were all disabled before its update ran.
            assert not {e for e in self.enabled if e[0] == source}, step.describe()
            assert step.version == max(step.source, step.target)
        elif kind is StepKind.ENABLE:
            assert step.extension is not None
            assert not {e for e in self.enabled if e[0] != version}, "two versions enabled"
            if outcome.ok:
                self.enabled.add((version, step.extension))
        elif kind is StepKind.DISABLE:
            assert step.extension is not None
            self.enabled.discard((version, step.extension))
        self.ran.append(step)

    def drive(
        self,
        target: HandlerTarget,
        data: st.DataObject | None = None,
        *,
        failures: bool = False,
        crashes: bool = False,
    ) -> bool:
        """Drive `target` like the engine, crashing and resuming on the way.

        Returns whether the drive ran to its end (rather than stopping on a failure).
        """
        crashed = 0
        count = 0
        while True:
            step = next_step(self.record, target)
            if step is None:
                return True
            count += 1
            assert count < MAX_STEPS, [s.describe() for s in self.ran[-MAX_STEPS:]]
            outcome = success(step)
            if (
                failures
                and data is not None
                and can_fail(step)
                and data.draw(st.integers(0, 4), label="ok") == 4
            ):
                code = data.draw(st.sampled_from(["1", "3", "51", "137"]), label="exit")
                outcome = Outcome(ok=False, exit_code=code, code=1009)
            self.execute(step, outcome)
            record, go_on = advance(self.record, target, step, outcome)
            if (
                crashes
                and data is not None
                and crashed < MAX_CRASHES
                and data.draw(st.integers(0, 5), label="crash") == 5
            ):
                crashed += 1
                if data.draw(st.booleans(), label="saved"):
                    self.record = record  # saved, then killed: resume from there
                continue  # else killed before the record was saved: the step runs again
            self.record = record
            if not go_on:
                assert not outcome.ok
                again = next_step(self.record, target)
                # A failure is not retried for the same target.
                assert again is None or again != step, step.describe()
                return False


def healed(target: HandlerTarget, serial: int) -> HandlerTarget:
    """`target` with new settings: whatever failed for it is tried again."""
    if target.removes_handler:
        return target
    exts = tuple(
        e.replace(sequence_number=100 + serial, settings_digest=f"h{serial}")
        for e in target.extensions
    )
    return target.replace(extensions=exts)


def assert_converged(world: World, target: HandlerTarget) -> None:
    record = world.record
    assert plan(record, target) == []
    if target.removes_handler:
        assert record.empty, record
        assert world.dirs == set()
        return
    assert target.version is not None
    if record.version is None:
        # Only a handler whose extensions are all disabled stays uninstalled.
        assert all(e.state is RequestedState.DISABLED for e in target.extensions)
        assert world.dirs == set()
        assert not world.enabled
        return
    assert record.version == target.version
    assert record.upgrade is None
    assert record.failed != target.handler_fingerprint
    assert world.dirs == {str(target.version)}
    wanted = {e.name: e.state is RequestedState.ENABLED for e in target.extensions}
    assert {e.name: e.enabled for e in record.extensions} == wanted
    enabled_now = {name for (version, name) in world.enabled if version == str(target.version)}
    assert enabled_now == {name for name, on in wanted.items() if on}
    state = HandlerState.ENABLED if any(wanted.values()) else HandlerState.INSTALLED
    assert record.state is state


@SETTINGS
@given(st.lists(targets(), min_size=1, max_size=6), st.data())
def test_random_goals_with_failures_and_crashes(
    goals: list[HandlerTarget], data: st.DataObject
) -> None:
    world = World()
    for serial, target in enumerate(goals):
        finished = world.drive(target, data, failures=True, crashes=True)
        if target.removes_handler:
            assert finished  # removal goes on whatever the commands say
            assert world.record.empty
        # With every step succeeding, the goal is reached, crashes or not...
        goal = healed(target, serial)
        world.drive(goal, data, crashes=True)
        assert_converged(world, goal)
        # ...and an unchanged goal runs nothing more.
        before = len(world.ran)
        world.drive(goal)
        assert len(world.ran) == before


@SETTINGS
@given(st.lists(targets(), min_size=1, max_size=4), targets(), st.data())
def test_goals_reached_without_failure_need_no_healing(
    history: list[HandlerTarget], goal: HandlerTarget, data: st.DataObject
) -> None:
    world = World()
    for target in history:
        world.drive(target, data, failures=True)
    # Put the record in a state where nothing about `goal` has failed yet.
    if not goal.removes_handler:
        world.drive(healed(goal, 1))
    world.drive(goal)
    assert_converged(world, goal)


@SETTINGS
@given(st.lists(targets(), max_size=4), targets(), st.data())
def test_crash_and_resume_matches_an_uninterrupted_run(
    history: list[HandlerTarget], goal: HandlerTarget, data: st.DataObject
) -> None:
    start = World()
    for target in history:
        start.drive(target, data, failures=True)
    record = start.record

    straight = World(dirs=set(start.dirs), installed=set(start.installed), record=record)
    straight.drive(goal)

    # The same run, killed at random instants; each kill either saved the step or not.
    crashed = World(dirs=set(start.dirs), installed=set(start.installed), record=record)
    repeated: list[Step] = []
    lost = False
    for _ in range(2 * MAX_STEPS):
        step = next_step(crashed.record, goal)
        if step is None:
            break
        crashed.execute(step, success(step))
        after, _ = advance(crashed.record, goal, step, success(step))
        kill = "none" if lost else data.draw(st.sampled_from(["none", "saved", "lost"]))
        lost = kill == "lost"
        if lost:
            repeated.append(step)  # killed before the record was saved
        else:
            crashed.record = after
    else:
        raise AssertionError("no end")

    assert crashed.record == straight.record
    assert crashed.dirs == straight.dirs
    assert Counter(crashed.ran) == Counter(straight.ran) + Counter(repeated)
    # Dropping each repeat gives back the uninterrupted order.
    deduped = [s for i, s in enumerate(crashed.ran) if i == 0 or s != crashed.ran[i - 1]]
    assert deduped == [s for i, s in enumerate(straight.ran) if i == 0 or s != straight.ran[i - 1]]


@SETTINGS
@given(st.lists(targets(), min_size=1, max_size=5), st.data())
def test_plan_previews_exactly_what_a_successful_drive_runs(
    goals: list[HandlerTarget], data: st.DataObject
) -> None:
    world = World()
    for target in goals:
        preview = plan(world.record, target)
        before = len(world.ran)
        finished = world.drive(target)
        assert finished
        assert world.ran[before:] == preview
        world.drive(target, data, failures=True)
