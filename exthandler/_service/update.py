"""Self-update, in `run`: follow the goal state's agent family to a new agent version.

After each goal state applied, the agent family it names (`[self_update] family`, else
the first one) is resolved with the rules of extension versions (docs/operating.md):
the request is `[self_update] version` (a pin: exactly that version), else the family's
version, else the running one; hotfixes are taken, minor versions when
`[self_update] auto_upgrade_minor` opts in, a major version never; without a pin the
agent never goes below the version it runs. The versions offered are those of the
family's PluginVersionManifest (its URIs), else of the runtime's repositories, as
`Exthandler.Agent.<Family>` packages.

A version other than the running one is installed into `<state dir>/agent/<version>/`,
selected, and `run` stops between two passes with `RESTART_EXIT`, for `exthandler daemon`
to start the new version, which finds the journal as the old one left it: no extension
command runs again for the switch. A version the daemon marked bad is not taken again.
The outcome is the instance view's `agent.updateStatus` and the status document's
`guestAgentStatus.updateStatus`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs

from .. import __version__
from .._errors import NoEligibleVersionError, PackageError
from .._fs import make_dir
from .._model import AgentFamily, GoalState, HandlerName, Version
from .._plan.versions import select_version
from .._report.view import AgentView, UpdateView
from .agents import AgentStore, agent_handler
from .config import SelfUpdateSettings
from .daemon import UNDER_DAEMON

if TYPE_CHECKING:
    from .._packages.repository import PackageRef, PackageSource, Workspace
    from .._runtime import Runtime

__all__ = ["RestartInto", "SelfUpdate"]

_ERROR_CODE = 1  # what is not a package's fault: no eligible version, a major version


class RestartInto(Exception):
    """`run` installed and selected `version`: the daemon is to start it."""

    def __init__(self, version: Version) -> None:
        super().__init__(f"restarting into agent {version}")
        self.version = version


@attrs.frozen
class Outcome:
    """What a check found: the view to show, and the version to restart into (if any)."""

    agent: AgentView
    restart: Version | None = None


@attrs.define(eq=False)
class SelfUpdate:
    """The self-update of one `run`: told each goal state applied (`goal_applied`), it
    checks in its own task (`run`) and stops the service to restart into a new version.
    `settings` follow the configuration (reloads included); `retry` is how long after a
    failed download it tries again; `under_daemon` whether a daemon restarts `run`."""

    settings: SelfUpdateSettings
    say: Callable[[str], None]
    current: Version = attrs.field(factory=lambda: Version.parse(__version__))
    retry: float = 60.0
    under_daemon: bool = attrs.field(factory=lambda: os.environ.get(UNDER_DAEMON) == "1")
    _goal: GoalState | None = attrs.field(default=None, init=False)
    _runtime: Runtime | None = attrs.field(default=None, init=False)
    _wake: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    _said: str | None = attrs.field(default=None, init=False)

    def attach(self, runtime: Runtime, settings: SelfUpdateSettings) -> None:
        """The runtime now serving, with the configuration in use; a check follows."""
        self._runtime = runtime
        self.configure(settings)
        self._wake.set()

    def configure(self, settings: SelfUpdateSettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self._wake.set()

    def goal_applied(self, goal: GoalState) -> None:
        self._goal = goal
        self._wake.set()

    async def run(self, stop: anyio.CancelScope, restart: list[Version]) -> None:
        """Check after each goal state applied (and `retry` s after a failure) until a new
        version is installed: then append it to `restart` and cancel `stop` between two
        passes."""
        delay = math.inf
        while True:
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            runtime, goal = self._runtime, self._goal
            if runtime is None or goal is None:
                continue
            outcome = await self.check(goal, runtime)
            if outcome.agent.update is not None and outcome.agent.update.status == "Error":
                delay = self.retry
            else:
                delay = math.inf
            if self._runtime is not runtime:
                continue  # reopened meanwhile: check again with the new one
            runtime.show_agent(outcome.agent)
            if outcome.restart is not None:
                async with runtime.between_passes():
                    restart.append(outcome.restart)
                    stop.cancel()
                return

    def _family(self, goal: GoalState) -> AgentFamily | None:
        wanted = self.settings.family
        if wanted is None:
            return goal.agent_families[0] if goal.agent_families else None
        return next(
            (f for f in goal.agent_families if f.name.casefold() == wanted.casefold()), None
        )

    async def check(self, goal: GoalState, runtime: Runtime) -> Outcome:
        """Resolve the goal's agent family, and install what it resolves to."""
        current = str(self.current)
        if not self.settings.enabled:
            return Outcome(AgentView(version=current))
        family = self._family(goal)
        if family is None:
            wanted = self.settings.family
            if wanted is None:
                return Outcome(AgentView(version=current))
            return self._error(self.current, f"the goal state names no agent family {wanted!r}")
        pinned = Version.parse(self.settings.version) if self.settings.version else None
        request = pinned or family.version or self.current
        if request.major != self.current.major:
            return self._error(
                request,
                f"agent {request} is another major version than {self.current}: self-update"
                " never crosses one (the machine's package manager does)",
            )
        handler = agent_handler(family.name)
        try:
            offered = await _offered(handler, family, runtime)
        except PackageError as exc:
            return self._error(request, exc.message, int(exc.code))
        try:
            best = select_version(
                request,
                [*offered, self.current],
                auto_upgrade_minor=self.settings.auto_upgrade_minor,
                use_exact_version=pinned is not None,
                handler=handler,
            )
        except NoEligibleVersionError as exc:
            return self._error(request, str(exc))
        if pinned is None and best < self.current:
            best = self.current
        if best == self.current:
            self._tell(f"self-update: running agent {best}, as {family.name} asks")
            return Outcome(self._view(best, "Success", f"running agent {best}"))
        store = AgentStore(runtime.config.state_dir)
        reason = store.bad_reason(best)
        if reason is not None:
            return self._error(
                best, f"agent {best} was marked bad ({reason}); staying on {current}"
            )
        if not self.under_daemon:
            return self._error(
                best, f"agent {best} is due, but `run` is not under `exthandler daemon`"
            )
        if best not in store.good():
            runtime.show_agent(self._view(best, "Transitioning", f"installing agent {best}"))
            self._tell(f"self-update: installing agent {best} for family {family.name}")
            source, ref = offered[best]
            # Checked as an extension's package is: signed when the policy says so.
            check, checked, required = runtime.package_check(handler, best)
            try:
                workspace = (await _workspace(store)).replace(check=check)
                must = (lambda: checked.done) if required else None
                await store.install(source, ref, workspace, checked=must)
            except PackageError as exc:
                return self._error(best, exc.message, int(exc.code))
        store.select(best)
        self._tell(f"self-update: agent {best} installed; restarting into it")
        return Outcome(self._view(best, "Transitioning", f"restarting into agent {best}"), best)

    def _view(self, expected: Version, status: str, message: str, code: int = 0) -> AgentView:
        update = UpdateView(
            expected_version=str(expected), status=status, code=code, message=message
        )
        return AgentView(version=str(self.current), update=update)

    def _error(self, expected: Version, message: str, code: int = _ERROR_CODE) -> Outcome:
        self._tell(f"self-update: {message}")
        return Outcome(self._view(expected, "Error", message, code))

    def _tell(self, line: str) -> None:
        if line != self._said:  # the same outcome, checked again, is said once
            self._said = line
            if self._runtime is not None:
                self._runtime.log(line)
            self.say(line)


async def _offered(
    handler: HandlerName, family: AgentFamily, runtime: Runtime
) -> Mapping[Version, tuple[PackageSource, PackageRef]]:
    """The versions of `handler` on offer: from the family's manifest when it names one,
    else from the runtime's repositories (the first offering a version wins)."""
    sources: Sequence[PackageSource]
    if family.uris:
        from .._packages.remote import ManifestSource

        sources = [ManifestSource(handler, family.uris)]
    else:
        sources = runtime.config.sources()
    offered: dict[Version, tuple[PackageSource, PackageRef]] = {}
    failed: list[PackageError] = []
    for source in sources:
        try:
            refs = await source.list_packages()
        except PackageError as exc:  # another source may still offer the versions
            failed.append(exc)
            continue
        for ref in refs:
            if ref.handler.key == handler.key:
                offered.setdefault(ref.version, (source, ref))
    if failed and not offered:
        raise failed[0]
    return offered


async def _workspace(store: AgentStore) -> Workspace:
    from .._packages.repository import Workspace

    scratch = store.root / ".downloads"
    await anyio.to_thread.run_sync(make_dir, scratch, 0o700)
    return Workspace(scratch)
