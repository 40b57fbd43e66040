"""The one-call lifecycle check: install, enable (seq n), enable (seq n+1), upgrade from an
older version, disable, uninstall, each running the commands in the protocol's order
(docs/protocol.md#lifecycle) and each leaving a valid status file (`validate_status`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import attrs
from exthandler_sdk import Handler
from exthandler_sdk.protocol import (
    MANIFEST_NAME,
    STATUS_DIR,
    HandlerState,
    ManifestError,
    package_file_name,
    parse_manifest,
    status_file_name,
)

from .._report.view import InstanceView
from ._agent import Agent
from ._harness import plain
from ._record import CommandRecord
from ._validate import validate_status

__all__ = ["LifecyclePhase", "LifecycleReport", "check_lifecycle"]


@attrs.frozen(kw_only=True)
class LifecyclePhase:
    """One phase of the check: what it expected, what ran, and the view it ended with."""

    name: str
    expected: tuple[str, ...]
    commands: tuple[CommandRecord, ...]
    view: InstanceView


@attrs.frozen(kw_only=True)
class LifecycleReport:
    phases: tuple[LifecyclePhase, ...]


def _resolve(
    agent: Agent, handler: type[Handler[Any, Any]] | str, version: str | None
) -> tuple[str, str]:
    if isinstance(handler, str):
        if version is None:
            raise TypeError("a handler given by name needs its version")
        return handler, version
    agent.add_handler(handler)
    return handler.name, handler.version


@attrs.define
class _Check:
    agent: Agent
    handler: str
    extension: str
    settings: Any
    protected: Any
    phases: list[LifecyclePhase] = attrs.field(factory=list)

    def goal(self, version: str, state: str = "enabled") -> dict[str, Any]:
        publisher, _, type_ = self.handler.rpartition(".")
        entry: dict[str, Any] = {
            "name": self.extension,
            "publisher": publisher,
            "type": type_,
            "typeHandlerVersion": version,
            "useExactVersion": True,
            "state": state,
        }
        if self.settings is not None:
            entry["settings"] = self.settings
        if self.protected is not None:
            entry["protectedSettings"] = self.protected
        return {"id": f"lifecycle-{len(self.phases)}", "extensions": [entry]}

    def _config_name(self, handler_dir: Path) -> str | None:
        """The extension's name as its files carry it: only a multi-config handler's do."""
        try:
            manifest = parse_manifest((handler_dir / MANIFEST_NAME).read_bytes())
        except (OSError, ManifestError):
            return None
        return self.extension if manifest.supports_multiple_extensions else None

    def phase(
        self,
        name: str,
        goal: dict[str, Any],
        expected: list[tuple[str, str]],
        *,
        sequence: int,
        version: str,
        enabled: bool,
    ) -> None:
        self.agent.take_commands()
        view = self.agent.apply(goal, sequence_numbers={self.extension: sequence})
        commands = tuple(self.agent.take_commands())
        wanted = tuple(f"{op} {self.handler}-{v}" for op, v in expected)
        ran = tuple(command.short for command in commands)
        context = f"lifecycle phase {name!r}"
        if ran != wanted:
            raise AssertionError(
                f"{context}: expected the commands\n  {list(wanted)}\nbut the runtime ran\n"
                f"  {list(ran)}"
            )
        for command in commands:
            if not command.ok:
                raise AssertionError(f"{context}: {command.short} failed: {command.message}")
        if enabled:
            ext = view.extension(self.extension)
            if ext is None or ext.handler_state != HandlerState.ENABLED or not ext.statuses:
                raise AssertionError(f"{context}: the extension is not enabled: {view.to_json()}")
            if ext.statuses[0].code != "ProvisioningState/succeeded":
                status = ext.statuses[0]
                raise AssertionError(f"{context}: status {status.code}: {status.message}")
        handler_dir = self.agent.handler_dir(self.handler, version)
        status_path = (
            handler_dir / STATUS_DIR / status_file_name(self._config_name(handler_dir), sequence)
        )
        if status_path.exists():
            problems = validate_status(status_path.read_bytes())
            if problems:
                listing = "\n".join(f"  {problem}" for problem in problems)
                raise AssertionError(f"{context}: invalid status file {status_path}:\n{listing}")
        elif enabled:
            raise AssertionError(f"{context}: no status file {status_path}")
        self.phases.append(LifecyclePhase(name=name, expected=wanted, commands=commands, view=view))


def check_lifecycle(
    agent: Agent,
    handler: type[Handler[Any, Any]] | str,
    *,
    version: str | None = None,
    previous: type[Handler[Any, Any]] | str | None = None,
    settings: Any = None,
    protected_settings: Any = None,
    extension: str = "lifecycle",
) -> LifecycleReport:
    """Drive `handler` through its whole life on `agent` and check every step.

    `handler` is a handler class (added to the agent) or a `Publisher.Type` whose packages
    were added (then `version` names the version to test). `previous`, a class or a
    version, is the older version to upgrade from; without it the upgrade phase is left
    out. Phases: install and enable (sequence n = 0), enable again with sequence n + 1,
    upgrade (old disable, new update, old uninstall, new install unless the manifest says
    UpdateWithoutInstall, new enable), disable, uninstall. Raises AssertionError naming
    the phase and what differed.
    """
    name, new_version = _resolve(agent, handler, version)
    old_version = None
    if previous is not None:
        old_name, old_version = (
            (name, previous) if isinstance(previous, str) else _resolve(agent, previous, None)
        )
        if old_name.lower() != name.lower():
            raise ValueError(f"previous is {old_name}, not a version of {name}")
    check = _Check(
        agent=agent,
        handler=name,
        extension=extension,
        settings=plain(settings),
        protected=plain(protected_settings),
    )
    first = old_version or new_version
    check.phase(
        "install and enable",
        check.goal(first),
        [("install", first), ("enable", first)],
        sequence=0,
        version=first,
        enabled=True,
    )
    check.phase(
        "enable with the next sequence number",
        check.goal(first),
        [("enable", first)],
        sequence=1,
        version=first,
        enabled=True,
    )
    if old_version is not None:
        steps = [("disable", old_version), ("update", new_version), ("uninstall", old_version)]
        agent_goal = check.goal(new_version)
        # the new version's manifest decides on install; it is on disk once fetched
        with_install = _UpgradeProbe(agent, name, new_version)
        check.phase(
            f"upgrade {old_version} -> {new_version}",
            agent_goal,
            [*steps, *with_install.install_step(), ("enable", new_version)],
            sequence=1,
            version=new_version,
            enabled=True,
        )
    check.phase(
        "disable",
        check.goal(new_version, "disabled"),
        [("disable", new_version)],
        sequence=1,
        version=new_version,
        enabled=False,
    )
    check.phase(
        "uninstall",
        check.goal(new_version, "uninstall"),
        [("uninstall", new_version)],
        sequence=1,
        version=new_version,
        enabled=False,
    )
    if agent.handler_dir(name, new_version).exists():
        raise AssertionError("lifecycle phase 'uninstall': the handler dir is still there")
    if agent.instance_view().extension(extension) is not None:
        raise AssertionError("lifecycle phase 'uninstall': the extension is still listed")
    return LifecycleReport(phases=tuple(check.phases))


@attrs.frozen
class _UpgradeProbe:
    """Whether the new version's install runs during the upgrade (its updateMode)."""

    agent: Agent
    handler: str
    version: str

    def install_step(self) -> list[tuple[str, str]]:
        mode = _mode_of(self.agent, self.handler, self.version)
        return [("install", self.version)] if mode else []


def _mode_of(agent: Agent, handler: str, version: str) -> bool:
    handler_class = agent.handler_class(handler, version)
    if handler_class is not None:
        return str(handler_class.update_mode).lower() == "updatewithinstall"
    return _zip_update_with_install(agent, handler, version)


def _zip_update_with_install(agent: Agent, handler: str, version: str) -> bool:
    path = agent.repo / package_file_name(handler, version)
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(
                (n for n in archive.namelist() if n.rsplit("/", 1)[-1] == MANIFEST_NAME),
                key=lambda n: (n.count("/"), n),
            )
            document = json.loads(archive.read(names[0]).decode("utf-8-sig"))
        mode = document[0]["handlerManifest"].get("updateMode", "UpdateWithInstall")
    except (OSError, ValueError, LookupError, TypeError, AttributeError, zipfile.BadZipFile):
        return True
    return str(mode).lower() == "updatewithinstall"
