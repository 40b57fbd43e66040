"""The commands a runtime ran, as its step hooks announce them.

`CommandLog` is a plugin: `exthandler_step_started` opens a record for each step that runs
a command, `exthandler_step_finished` completes it from the hook's `StepResult` (the
operation, the protocol variables the command was given, the exit code, the duration).
Nothing is read back from the runtime's files.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from exthandler_sdk import Operation, hookimpl

if TYPE_CHECKING:
    from .._plan.planner import Step
    from .._plugins import StepResult

__all__ = ["CommandLog", "CommandRecord"]

_COMMANDS = frozenset(operation.value for operation in Operation)


def _copy(env: Mapping[str, str]) -> Mapping[str, str]:
    return dict(env)


@attrs.frozen(kw_only=True)
class CommandRecord:
    """One command the runtime ran (or tried to), in the order the commands started.

    `ok` is None while the command runs. `env` holds the protocol variables (see
    docs/protocol.md#command-environment) the command was given; `exit_code` is as the
    protocol's exit-code variables carry it (`NOT_RUN` when nothing ran) and `duration` in
    seconds, both None until the command ends, and for a command a killed runtime left
    unfinished.
    """

    operation: str
    handler: str
    version: str
    extension: str | None
    ok: bool | None
    message: str
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_copy, hash=False)
    exit_code: str | None = None
    duration: float | None = None

    @property
    def short(self) -> str:
        """`operation Publisher.Type-Version`, e.g. `enable Contoso.Examples.Hello-1.0.0`."""
        return f"{self.operation} {self.handler}-{self.version}"

    @classmethod
    def running(cls, step: Step) -> CommandRecord:
        """The record of `step` while its command runs."""
        return cls(
            operation=str(step.kind.value),
            handler=str(step.handler),
            version=str(step.version),
            extension=step.extension,
            ok=None,
            message="running",
        )

    @classmethod
    def of(cls, result: StepResult) -> CommandRecord:
        """The record of a command that ended with `result`."""
        assert result.operation is not None  # only command steps are recorded
        return cls(
            operation=result.operation.value,
            handler=str(result.handler),
            version=str(result.version),
            extension=result.extension,
            ok=result.ok,
            message=result.message,
            env=result.env,
            exit_code=result.exit_code,
            duration=result.duration,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON data (`from_json` reads it back)."""
        return {**attrs.asdict(self), "env": dict(self.env)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommandRecord:
        return cls(**data)


def runs_command(kind: str) -> bool:
    """Whether a step of `kind` (`install`, `fetch`, ...) runs a command of the handler."""
    return kind in _COMMANDS


@attrs.define(eq=False)
class CommandLog:
    """Records command steps as the runtime announces them, in the order they start."""

    records: list[CommandRecord] = attrs.field(factory=list)
    _open: dict[Hashable, int] = attrs.field(factory=dict)

    @hookimpl
    def exthandler_step_started(self, step: Step) -> None:
        if runs_command(str(step.kind.value)):
            self.started(id(step), CommandRecord.running(step))

    @hookimpl
    def exthandler_step_finished(self, step: Step, result: StepResult) -> None:
        if result.operation is not None:
            self.finished(id(step), CommandRecord.of(result))

    def started(self, key: Hashable, record: CommandRecord) -> None:
        """A command began: its record takes the next place in start order."""
        self._open[key] = len(self.records)
        self.records.append(record)

    def finished(self, key: Hashable, record: CommandRecord) -> None:
        """The command begun under `key` ended: its record replaces the running one."""
        index = self._open.pop(key, None)
        if index is None:  # pragma: no cover - the runtime announces every step it finishes
            self.records.append(record)
        else:
            self.records[index] = record

    def abandon(self, message: str) -> None:
        """The runtime died: the commands still open failed, with `message`."""
        for index in self._open.values():
            self.records[index] = attrs.evolve(self.records[index], ok=False, message=message)
        self._open.clear()
