"""Observing a runtime that runs in another process, and is then killed.

`Agent.apply_killed` runs the real CLI. The CLI loads the plugins of the `exthandler`
entry-point group, so the agent gives that one process a plugin the documented way: a
small distribution (only its metadata: `plugin_path` writes it) on the process's
`PYTHONPATH`, whose entry point is `plugin` below. The plugin appends one JSON line per
command step that starts or ends to the file named by `STEPS_VARIABLE`, with a single
write each, so a SIGKILL leaves whole lines. `replay` reads them back into a `CommandLog`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exthandler_sdk import hookimpl

from ._record import CommandLog, CommandRecord, runs_command

if TYPE_CHECKING:
    from .._plan.planner import Step
    from .._plugins import StepResult

__all__ = ["STEPS_VARIABLE", "StepWriter", "plugin", "plugin_path", "replay"]

STEPS_VARIABLE = "EXTHANDLER_TESTING_STEPS"
"""The file the plugin appends its lines to (unset: the plugin writes nothing)."""
_DISTRIBUTION = "exthandler_testing_recorder-0.dist-info"
_ENTRY_POINT = "exthandler-testing-recorder"


class StepWriter:
    """The plugin the killed runtime loads: it writes down command steps as JSON lines."""

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        if runs_command(str(step.kind.value)):
            self._write({"started": id(step), "record": CommandRecord.running(step).to_json()})

    @hookimpl
    def exthandler_step_finished(self, step: Step, result: StepResult) -> None:
        if result.operation is not None:
            self._write({"finished": id(step), "record": CommandRecord.of(result).to_json()})

    def _write(self, entry: Mapping[str, Any]) -> None:
        target = os.environ.get(STEPS_VARIABLE)
        if not target:
            return
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        descriptor = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


plugin = StepWriter()


def plugin_path(directory: Path) -> Path:
    """Write, under `directory`, the metadata of a distribution whose `exthandler` entry
    point is `plugin`; returns the dir to put on `PYTHONPATH`."""
    info = directory / _DISTRIBUTION
    info.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = _DISTRIBUTION.partition("-")[0]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[exthandler]\n{_ENTRY_POINT} = {__name__}:plugin\n")
    return directory


def replay(path: Path, *, abandoned: str) -> list[CommandRecord]:
    """The commands written to `path`, in start order; those that never ended failed,
    with the message `abandoned`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    log = CommandLog()
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            record = CommandRecord.from_json(entry["record"])
        except (ValueError, KeyError, TypeError):  # pragma: no cover - whole lines only
            continue
        if "started" in entry:
            log.started(entry["started"], record)
        else:
            log.finished(entry["finished"], record)
    log.abandon(abandoned)
    return log.records
