"""The executor plug point: what runs a step's command, and what it is told.

The engine picks, for each command, the first executor whose `accepts` takes the handler
dir's manifest; the runtime lists the in-process executor first and the process executor
last (it accepts every manifest). An embedder may put its own in front (a container, a
remote host, a sandbox): it gets a `CommandRequest` and answers a `CommandResult`, and the
engine does everything else (settings files, HandlerState, status, journal, view).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from exthandler_sdk import Operation

from .._model import HandlerName, Version
from .._packages.manifest import HandlerManifest
from .._values import Value
from .process import CommandResult

__all__ = ["CommandRequest", "Executor"]


class CommandRequest(Value):
    """One command to run: which handler, which operation, and everything it needs.

    `env` holds the protocol variables of this command (sequence number, extension path,
    version, supported features, and the update variables when they apply); `base_env`
    is the environment a child process starts from, without any protocol variable.
    `timeout` is the runtime's override for this handler (configuration), or None: then
    the executor chooses (the handler's own limit, else the protocol's default).
    `log_file` is the handler's CommandExecution.log; `marker` is the file that names a
    running process group so that a runtime killed meanwhile can end it at its next start.
    """

    handler: HandlerName
    version: Version
    directory: Path
    manifest: HandlerManifest
    operation: Operation
    command: str
    env: Mapping[str, str]
    base_env: Mapping[str, str]
    timeout: float | None
    log_file: Path
    marker: Path


@runtime_checkable
class Executor(Protocol):
    """Runs the commands of the handler dirs it `accepts`.

    `reads_handler_state` says whether what it runs may read the HandlerState files
    between two steps (a package's scripts may). When it does not, the engine may write
    a state that the very next step replaces (Installed, just before Enabled) only once.
    """

    @property
    def reads_handler_state(self) -> bool: ...

    def accepts(self, manifest: HandlerManifest) -> bool:
        """Whether this executor runs the commands of a handler dir with `manifest`."""
        ...

    def command_line(self, request: CommandRequest) -> str:
        """How the command is named in CommandExecution.log and the runtime's log."""
        ...

    async def run(self, request: CommandRequest) -> CommandResult:
        """Run the command to its end within its timeout and report how it ended.

        A failure of the command is a result, never an exception; a result whose
        `skipped` is set means the command could not run and the step goes on (its
        reason is logged). When the caller's scope is cancelled, end what was started
        before re-raising.
        """
        ...
