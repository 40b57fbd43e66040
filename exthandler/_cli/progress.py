"""Live progress on a terminal while a goal state is applied (a plugin of the CLI's)."""

from __future__ import annotations

import time
from typing import TextIO

from exthandler_sdk import hookimpl

from .._plan.planner import Step

__all__ = ["Progress"]


class Progress:
    """Draws one status line: which handler runs which step, for how long, how many done."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.running: dict[str, tuple[Step, float]] = {}
        self.finished = 0
        self.failed = 0
        self._width = 0

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        self.running[str(step.handler)] = (step, time.monotonic())
        self.draw()

    @hookimpl
    def exthandler_step_finished(self, step: Step, ok: bool, message: str) -> None:
        self.running.pop(str(step.handler), None)
        self.finished += 1
        if not ok:
            self.failed += 1
            self.clear()
            self.out.write(
                f"failed: {step.describe()}: {message.splitlines()[0] if message else ''}\n"
            )
        self.draw()

    def line(self) -> str:
        now = time.monotonic()
        parts = [f"{self.finished} steps done" + (f", {self.failed} failed" if self.failed else "")]
        for step, started in list(self.running.values())[:3]:
            parts.append(f"{step.describe()} ({now - started:.1f}s)")
        if len(self.running) > 3:
            parts.append(f"+{len(self.running) - 3} more")
        return " | ".join(parts)

    def draw(self) -> None:
        text = self.line()
        self.out.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self.out.flush()

    def clear(self) -> None:
        if self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self._width = 0
            self.out.flush()
