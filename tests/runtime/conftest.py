"""Fixtures for runtime tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.support import Agent, Packages


@pytest.fixture
def packages(tmp_path: Path) -> Packages:
    repo = tmp_path / "repo"
    repo.mkdir()
    return Packages(repo=repo)


@pytest.fixture
def agent(tmp_path: Path, packages: Packages, monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    ops = tmp_path / "ops.log"
    monkeypatch.setenv("EXTHANDLER_TEST_OPS", str(ops))
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    monkeypatch.setenv("EXTHANDLER_BOOT_ID_FILE", str(boot))
    yield Agent(root=tmp_path, repo=packages.repo, ops_log=ops, goal_path=tmp_path / "goal.json")
    os.environ.pop("EXTHANDLER_TEST_OPS", None)
