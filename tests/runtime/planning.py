"""Planning a whole course at once: the steps `next_step` gives while every step succeeds."""

from __future__ import annotations

from exthandler._plan.planner import HandlerRecord, HandlerTarget, Outcome, Step, advance, next_step


def plan(record: HandlerRecord, target: HandlerTarget, *, limit: int = 1000) -> list[Step]:
    """Every step from `record` to `target`, assuming each one succeeds (at most `limit`)."""
    steps: list[Step] = []
    while len(steps) < limit:
        step = next_step(record, target)
        if step is None:
            break
        steps.append(step)
        record, _ = advance(record, target, step, Outcome(ok=True))
    return steps
