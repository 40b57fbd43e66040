"""What a re-apply of an unchanged goal state costs in file operations: for each handler
one stat of its dir's files, and no write anywhere in the handler dirs or their logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.support import Agent, Packages, extension, goal

HANDLERS = ("Test.One", "Test.Two", "Test.Three")
ROOT = Path(__file__).resolve().parents[2]
# What an apply that runs no command never needs: the built-in handlers (the goal names
# none), the entry-point metadata scan, a generic converter for the records, the SDK's
# runner of handlers in process, the status upload's HTTP stack.
NOT_NEEDED = (
    "cattrs",
    "exthandler_plugins.apphealth",
    "exthandler_plugins.customscript",
    "exthandler_plugins.runcommand",
    "exthandler_plugins.vmaccess",
    "exthandler_sdk._runner",
    "exthandler_sdk.blob",
    "importlib.metadata",
    "urllib.request",
)


def _files(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `roots`: (inode, size, mtime in ns), links not followed."""
    found = {}
    for root in roots:
        for directory, dirs, names in os.walk(root):
            for name in [*dirs, *names]:
                info = os.lstat(os.path.join(directory, name))
                found[os.path.join(directory, name)] = (
                    info.st_ino,
                    info.st_size,
                    info.st_mtime_ns,
                )
    return found


def test_an_unchanged_reapply_stats_each_handler_dir_once_and_writes_nothing(
    agent: Agent, packages: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    document = goal(*(extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)), id="g1")
    code, _ = agent.apply(document)
    assert code == 0
    agent.take_ops()
    dirs = [agent.state / f"{h}-1.0.0" for h in HANDLERS]
    before = _files(*dirs, agent.state / "log")

    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, str | os.PathLike) and any(
            os.fspath(path).startswith(str(d)) for d in dirs
        ):
            stats.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    code, view = agent.apply(document)
    monkeypatch.undo()

    assert code == 0
    assert agent.take_ops() == []
    assert len(view["extensions"]) == len(HANDLERS)
    assert len(stats) == len(HANDLERS), stats  # one stat per handler, no more
    assert _files(*dirs, agent.state / "log") == before  # nothing written, nothing replaced


def test_an_apply_does_not_parse_the_view_it_replaces(
    agent: Agent, packages: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last view is shown until a runtime's first pass ends; an apply replaces it at
    # once, so parsing it (thousands of extensions: the dearest part of an unchanged
    # pass) would be wasted.
    from exthandler._report.view import InstanceView

    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    document = goal(*(extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)), id="g1")
    assert agent.apply(document)[0] == 0

    parsed: list[object] = []
    real = InstanceView.from_json.__func__  # type: ignore[attr-defined]

    def counting(cls: type[InstanceView], data: Any) -> InstanceView:
        parsed.append(data)
        return real(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(InstanceView, "from_json", classmethod(counting))
    code, view = agent.apply(document)
    assert code == 0
    assert len(view["extensions"]) == len(HANDLERS)
    assert parsed == []
    # What reads the view still parses it.
    code, _ = agent.cli("status", "--state-dir", str(agent.state))
    assert code == 0
    assert len(parsed) == 1


def test_an_unchanged_reapply_imports_nothing_it_does_not_use(
    agent: Agent, packages: Packages
) -> None:
    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    document = goal(*(extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)), id="g1")
    assert agent.apply(document)[0] == 0
    agent.take_ops()
    argv = ["apply", str(agent.goal_path), "--state-dir", str(agent.state)]
    argv += ["--repo", str(agent.repo), "--json"]
    script = (
        "import contextlib, io, json, sys\n"
        "from exthandler._cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = run({argv!r})\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    code, modules = json.loads(done.stdout.splitlines()[-1])
    assert code == 0, done.stderr
    assert agent.take_ops() == []  # nothing ran
    assert "exthandler._engine" in modules  # it did apply
    assert sorted(m for m in modules if m.startswith(NOT_NEEDED)) == []
