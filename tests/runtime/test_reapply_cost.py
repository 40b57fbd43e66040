"""What a re-apply of an unchanged goal state costs in file operations: for each handler
one stat of its dir's files, and no write anywhere in the handler dirs or their logs."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path
from typing import Any

import pytest

from exthandler._engine.state import FACTS_FILE
from exthandler._packages.manifest import MANIFEST_NAME
from tests.runtime.support import Agent, Packages, extension, goal
from tests.runtime.test_startup import imported_by

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
    """Every entry under `roots` (a root that is a file: itself): (inode, size, mtime in
    ns), links not followed."""
    found = {}
    for root in roots:
        paths = [str(root)] if not root.is_dir() else []
        for directory, dirs, names in os.walk(root):
            paths += [os.path.join(directory, name) for name in [*dirs, *names]]
        for path in paths:
            info = os.lstat(path)
            found[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def test_an_unchanged_reapply_reads_one_file_per_handler_dir_and_writes_nothing(
    agent: Agent, packages: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    document = goal(*(extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)), id="g1")
    code, _ = agent.apply(document)
    assert code == 0
    agent.take_ops()
    dirs = [agent.state / f"{h}-1.0.0" for h in HANDLERS]
    facts = agent.state / ".exthandler" / FACTS_FILE
    view_file = agent.state / ".exthandler" / "instance-view.json"
    before = _files(*dirs, agent.state / "log", facts, view_file)

    stats: list[str] = []
    opens: list[str] = []
    real_stat, real_open, real_builtin_open = os.stat, os.open, builtins.open

    def ours(path: Any) -> bool:
        return isinstance(path, str | os.PathLike) and any(
            os.fspath(path).startswith(str(d)) for d in dirs
        )

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if ours(path):
            stats.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if ours(path):
            opens.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    def counting_builtin_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if ours(path):
            opens.append(os.fspath(path))
        return real_builtin_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_builtin_open)
    code, view = agent.apply(document, "--full-pass")  # a quiet pass: test_quiet_pass.py
    monkeypatch.undo()

    assert code == 0
    assert agent.take_ops() == []
    assert len(view["extensions"]) == len(HANDLERS)
    # Per handler: is the dir intact (HandlerEnvironment.json), is its manifest the one
    # whose facts the state dir keeps; and one read, of the extension's status file.
    assert sorted(stats) == sorted(
        f"{d}/{name}" for d in dirs for name in ("HandlerEnvironment.json", MANIFEST_NAME)
    )
    assert sorted(opens) == sorted(f"{d}/status/0.status" for d in dirs)
    # Nothing written, nothing replaced: not in the handler dirs, not the facts they keep,
    # not the view file (it says the same already: flushed, not rewritten).
    assert _files(*dirs, agent.state / "log", facts, view_file) == before


def test_a_changed_manifest_is_read_again(agent: Agent, packages: Packages) -> None:
    packages.build("Test.One", "1.0.0")
    document = goal(extension("ext0", "Test.One"), id="g1")
    assert agent.apply(document)[0] == 0
    manifest = agent.state / "Test.One-1.0.0" / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    # The handler now says it takes several extensions: its status file is named so.
    data[0]["handlerManifest"]["supportsMultipleExtensions"] = True
    manifest.write_text(json.dumps(data))
    status = agent.state / "Test.One-1.0.0" / "status"
    (status / "ext0.0.status").write_bytes((status / "0.status").read_bytes())
    (status / "0.status").unlink()
    code, view = agent.apply(document)
    assert code == 0
    assert view["extensions"][0]["statuses"][0]["code"] == "ProvisioningState/succeeded"


def test_a_damaged_facts_file_is_read_again_from_the_manifests(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.One", "1.0.0")
    document = goal(extension("ext0", "Test.One"), id="g1")
    assert agent.apply(document)[0] == 0
    facts = agent.state / ".exthandler" / FACTS_FILE
    assert "Test.One-1.0.0" in json.loads(facts.read_text())["dirs"]
    for damage in (b"{", b'{"format": 1, "dirs": {"Test.One-1.0.0": [1, 2]}}', b"[]"):
        facts.write_bytes(damage)
        code, view = agent.apply(document)
        assert code == 0
        assert view["extensions"][0]["statuses"][0]["code"] == "ProvisioningState/succeeded"
        assert "Test.One-1.0.0" in json.loads(facts.read_text())["dirs"]  # written anew


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
    modules = imported_by(argv)
    assert agent.take_ops() == []  # nothing ran
    assert "exthandler._engine" in modules  # it did apply
    assert sorted(m for m in modules if m.startswith(NOT_NEEDED)) == []


def test_an_unchanged_reapply_starts_no_task_for_its_handlers(
    agent: Agent, packages: Packages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task per handler cost more than everything else a handler with nothing to do
    # costs; only handlers with something to do (or a dependency to wait for) get one.
    from exthandler._engine.driver import HandlerDriver

    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    exts = [extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)]
    assert agent.apply(goal(*exts, id="g1"))[0] == 0
    agent.take_ops()

    driven: list[str] = []
    real = HandlerDriver.drive

    async def counting(self: HandlerDriver, target: Any, slot: Any, work: Any) -> None:
        driven.append(str(target.handler))
        await real(self, target, slot, work)

    monkeypatch.setattr(HandlerDriver, "drive", counting)
    code, _ = agent.apply(goal(*exts, id="g1"))
    assert (code, driven, agent.take_ops()) == (0, [], [])

    # New settings for one, a dependency for another: those two are driven.
    exts[0] = extension("ext0", HANDLERS[0], settings={"new": True})
    exts[1] = extension("ext1", HANDLERS[1], provisionAfterExtensions=["ext2"])
    code, view = agent.apply(goal(*exts, id="g2"))
    assert code == 0
    assert sorted(driven) == sorted(HANDLERS[:2])
    assert [op.op for op in agent.take_ops()] == ["enable"]
    assert {e["statuses"][0]["code"] for e in view["extensions"]} == {"ProvisioningState/succeeded"}
