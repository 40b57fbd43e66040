"""Which agent version self-update resolves to: the extension version rules, run in
process against a real runtime and a repository of built agent packages."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from exthandler._model import AgentFamily, GoalState, Version
from exthandler._runtime import RuntimeConfig, open_runtime
from exthandler._service.agents import AgentStore
from exthandler._service.config import SelfUpdateSettings
from exthandler._service.daemon import Choice, Daemon
from exthandler._service.update import SelfUpdate
from tests.service.conftest import Build

OFFERED = ("0.1.3", "0.2.0", "1.0.0")


def _resolve(tmp_path: Path, family: AgentFamily, **settings: object) -> tuple[str, str, str]:
    """(expectedVersion, status, message) for a runtime of version 0.1.0 that is not
    under a daemon: it resolves, and says what is due without installing it."""
    lines: list[str] = []
    updater = SelfUpdate(
        SelfUpdateSettings(enabled=True, **settings),  # type: ignore[arg-type]
        lines.append,
        current=Version.parse("0.1.0"),
        under_daemon=False,
    )
    config = RuntimeConfig(
        state_dir=tmp_path / "state", repositories=[tmp_path / "repo"], load_entry_points=False
    )

    async def go() -> tuple[str, str, str]:
        async with open_runtime(config) as runtime:
            goal = GoalState(id="g", extensions=(), agent_families=(family,))
            outcome = await updater.check(goal, runtime)
        update = outcome.agent.update
        assert update is not None
        assert outcome.restart is None
        return update.expected_version, update.status, update.message

    return anyio.run(go)


@pytest.fixture
def repo(tmp_path: Path, agent_package: Build) -> Path:
    for version in OFFERED:
        agent_package(version, tmp_path / "repo")
    return tmp_path / "repo"


@pytest.mark.parametrize(
    ("version", "settings", "expected"),
    [
        (None, {}, "0.1.3"),  # a hotfix is taken
        ("0.1", {}, "0.1.3"),
        (None, {"auto_upgrade_minor": True}, "0.2.0"),  # a minor version on opt-in
        ("0.2", {}, "0.2.0"),  # the family asks for it
        ("0.1.3", {"version": "0.1.0"}, "0.1.0"),  # pinned: staying is Success
    ],
)
def test_versions(
    tmp_path: Path, repo: Path, version: str | None, settings: dict[str, object], expected: str
) -> None:
    family = AgentFamily(name="Prod", version=Version.parse(version) if version else None)
    got, status, message = _resolve(tmp_path, family, **settings)
    assert got == expected
    if expected == "0.1.0":
        assert (status, message) == ("Success", "running agent 0.1.0")
    else:
        assert status == "Error"
        assert message == f"agent {expected} is due, but `run` is not under `exthandler daemon`"
    assert not (tmp_path / "state" / "agent").exists()


def test_a_pin_to_a_version_not_offered(tmp_path: Path, repo: Path) -> None:
    got, status, message = _resolve(tmp_path, AgentFamily(name="Prod"), version="0.1.2")
    assert (got, status) == ("0.1.2", "Error")
    assert message == (
        "no version of Exthandler.Agent.Prod matches exactly 0.1.2"
        " (available: 0.1.0, 0.1.3, 0.2.0, 1.0.0)"
    )


def test_the_daemon_chooses_the_selected_then_the_last_good_then_the_newest(
    tmp_path: Path,
) -> None:
    store = AgentStore(tmp_path)
    for version in ("0.1.0", "0.1.3", "0.2.0"):
        launcher = store.launcher(Version.parse(version))
        launcher.parent.mkdir(parents=True)
        launcher.write_text("")
    daemon = Daemon(store=store, own=Version.parse("0.1.0"))
    own = Choice(Version.parse("0.1.0"), installed=False)  # wins the tie with 0.1.0
    newest = Choice(Version.parse("0.2.0"), installed=True)
    older = Choice(Version.parse("0.1.3"), installed=True)
    assert daemon.choose() == newest
    store.select(Version.parse("0.1.3"))
    assert daemon.choose() == older
    store.select(Version.parse("0.1.0"))
    assert daemon.choose() == own
    assert daemon.command(own)[1:] == ["-m", "exthandler", "run"]
    store.select(Version.parse("0.2.0"))
    store.mark_bad(Version.parse("0.2.0"), "crashed")
    daemon.history = [older, newest]
    assert daemon.choose() == older  # the version that ran before the bad one
    daemon.history = []
    assert daemon.choose() == older  # else the newest good one
