"""Quiet passes: `apply` of a goal state whose last pass changed nothing, with nothing it
read changed since, shows that pass's view without a pass; any change means a whole pass.

A whole pass is told from a quiet one by whether the engine ran at all (`Engine.apply` is
wrapped to count its calls); either way the output must be the same.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exthandler._cli.main import main
from exthandler._engine.engine import Engine
from exthandler._state import quiet
from tests.runtime.support import Agent, Packages, extension, goal

STAMP = Path(".exthandler") / quiet.STAMP_FILE
HANDLERS = ("Test.One", "Test.Two")


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The goal ids of the whole passes the engine ran."""
    ran: list[str] = []
    real = Engine.apply

    async def counted(self: Engine, goal: Any) -> Any:
        ran.append(goal.id)
        return await real(self, goal)

    monkeypatch.setattr(Engine, "apply", counted)
    return ran


def _settle() -> None:
    """Let the clock move past the window in which a just-written file is not vouched for
    (a file changed in the clock tick of the read could keep its stat)."""
    time.sleep(quiet.RACY_NS / 1e9 + 0.05)


def _stamped(agent: Agent, document: dict[str, Any], *extra: str) -> dict[str, Any]:
    """Install `document`, then apply it again until a quiet pass is stamped; its view."""
    code, view = agent.apply(document, *extra)
    assert code == 0, view
    _settle()
    code, view = agent.apply(document, *extra)
    assert code == 0
    assert (agent.state / STAMP).is_file()
    agent.take_ops()
    return view


def _document() -> dict[str, Any]:
    return goal(*(extension(f"ext{i}", h) for i, h in enumerate(HANDLERS)), id="g1")


@pytest.fixture
def installed(agent: Agent, packages: Packages) -> dict[str, Any]:
    for handler in HANDLERS:
        packages.build(handler, "1.0.0")
    return _stamped(agent, _document())


def _tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    found = {}
    for directory, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            info = os.lstat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (
                info.st_ino,
                info.st_size,
                info.st_mtime_ns,
                info.st_mode,
            )
    return found


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _apply_argv(agent: Agent, *extra: str) -> list[str]:
    argv = ["apply", str(agent.goal_path), "--state-dir", str(agent.state)]
    return [*argv, "--repo", str(agent.repo), *extra]


def test_a_quiet_pass_shows_what_a_whole_pass_would_and_touches_nothing(
    agent: Agent, installed: dict[str, Any], passes: list[str]
) -> None:
    before = _tree(agent.root)
    stats: list[str] = []
    opens: list[str] = []
    real_stat, real_open = os.stat, builtins.open
    dirs = [str(agent.state / f"{h}-1.0.0") for h in HANDLERS]

    def ours(path: Any) -> bool:
        return isinstance(path, str | os.PathLike) and os.fspath(path).startswith(tuple(dirs))

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if ours(path):
            stats.append(os.path.relpath(os.fspath(path), agent.state))
        return real_stat(path, *args, **kwargs)

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if ours(path):
            opens.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as counting:
        counting.setattr(os, "stat", counting_stat)
        counting.setattr(builtins, "open", counting_open)
        quiet_json = _cli(*_apply_argv(agent, "--json"))
        quiet_table = _cli(*_apply_argv(agent))

    assert passes == []  # the engine never ran
    # One stat per file the last pass read in each handler dir; nothing opened there.
    assert sorted(stats) == sorted(
        2 * [f"{h}-1.0.0/{name}" for h in HANDLERS for name in ("HandlerManifest.json",)]
        + 2 * [f"{h}-1.0.0/HandlerEnvironment.json" for h in HANDLERS]
        + 2 * [f"{h}-1.0.0/status/0.status" for h in HANDLERS]
    )
    assert opens == []
    assert _tree(agent.root) == before  # nothing written, not even the runtime's own files
    # What a whole pass prints, exactly: the view (JSON or table), and the summary.
    whole_json = _cli(*_apply_argv(agent, "--json", "--full-pass"))
    whole_table = _cli(*_apply_argv(agent, "--full-pass"))
    assert passes == ["g1", "g1"]
    assert quiet_json == whole_json
    assert quiet_table == whole_table
    assert quiet_json[0] == 0
    assert json.loads(quiet_json[1]) == installed
    assert quiet_json[2] == "exthandler: nothing to do\n"


def _rewrite_status(agent: Agent, status: str, message: str) -> None:
    path = agent.state / "Test.One-1.0.0" / "status" / "0.status"
    document = json.loads(path.read_text())
    document[0]["status"]["status"] = status
    document[0]["status"]["formattedMessage"]["message"] = message
    path.write_text(json.dumps(document))


def _add_version(agent: Agent, packages: Packages) -> None:
    packages.build("Test.One", "1.0.1")


def _drop_handler_dir(agent: Agent, packages: Packages) -> None:
    import shutil

    shutil.rmtree(agent.state / "Test.Two-1.0.0")


def _drop_event(agent: Agent, packages: Packages) -> None:
    events = agent.state / "log" / "Test.One" / "events"
    event = {
        "Version": "1.0",
        "Timestamp": "2026-11-25T12:00:00Z",
        "TaskName": "probe",
        "EventLevel": "Informational",
        "Message": "hello",
        "EventPid": "1",
        "EventTid": "1",
        "OperationId": "op",
    }
    (events / "1.json").write_text(json.dumps(event))


def _reboot(agent: Agent, packages: Packages) -> None:
    (agent.root / "boot_id").write_text("boot-2\n")


def _kill_left_lock(agent: Agent, packages: Packages) -> None:
    (agent.state / ".exthandler" / "lock").write_text("12345\n")


def _damage_stamp(agent: Agent, packages: Packages) -> None:
    (agent.state / STAMP).write_text("{")


def _chmod_state(agent: Agent, packages: Packages) -> None:
    agent.state.chmod(0o711)


CHANGES: dict[str, Callable[[Agent, Packages], None]] = {
    "a status file rewritten": lambda agent, packages: _rewrite_status(
        agent, "success", "still fine"
    ),
    "a hotfix in the repository": _add_version,
    "a handler dir deleted": _drop_handler_dir,
    "an event dropped": _drop_event,
    "a reboot": _reboot,
    "a killed runtime's lock": _kill_left_lock,
    "a damaged stamp": _damage_stamp,
    "the state dir's mode": _chmod_state,
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_a_pass_reads_means_a_whole_pass(
    agent: Agent, packages: Packages, installed: dict[str, Any], passes: list[str], change: str
) -> None:
    CHANGES[change](agent, packages)
    code, view = agent.apply(_document())
    assert passes == ["g1"]
    assert code == 0
    if change == "a hotfix in the repository":
        assert {op.short for op in agent.take_ops()} >= {"enable Test.One-1.0.1"}
    if change == "a handler dir deleted":
        assert "enable Test.Two-1.0.0" in {op.short for op in agent.take_ops()}
    if change == "a status file rewritten":
        assert view["extensions"][0]["statuses"][0]["message"] == "still fine"


def test_a_status_file_rewritten_to_the_same_size_is_seen(
    agent: Agent, installed: dict[str, Any], passes: list[str]
) -> None:
    path = agent.state / "Test.One-1.0.0" / "status" / "0.status"
    old = path.read_text()
    _rewrite_status(agent, "error", "x" * 3)
    new = path.read_text()
    path.write_text(new + " " * max(0, len(old) - len(new)))  # same size, if it can be
    code, view = agent.apply(_document())
    assert passes == ["g1"]
    assert code == 1
    assert view["extensions"][0]["statuses"][0]["level"] == "Error"


@pytest.mark.parametrize(
    "argv",
    [["--concurrency", "3"], ["--command-timeout", "30"], ["--full-pass"]],
    ids=["another concurrency", "another timeout", "asked for"],
)
def test_other_options_mean_a_whole_pass(
    agent: Agent, installed: dict[str, Any], passes: list[str], argv: list[str]
) -> None:
    code, view = agent.apply(_document(), *argv)
    assert passes == ["g1"]
    assert (code, view) == (0, installed)


def test_a_changed_goal_means_a_whole_pass_and_a_new_stamp_later(
    agent: Agent, installed: dict[str, Any], passes: list[str]
) -> None:
    document = _document()
    document["extensions"][0]["settings"] = {"new": 1}
    code, _ = agent.apply(document)
    assert code == 0
    assert passes == ["g1"]
    assert [op.short for op in agent.take_ops()] == ["enable Test.One-1.0.0"]
    # The pass that ran a command keeps no stamp; the next quiet one does.
    assert not (agent.state / STAMP).exists()
    _settle()
    agent.apply(document)
    agent.apply(document)
    assert passes == ["g1", "g1"]


def test_another_runtime_holding_the_state_dir_is_waited_for_by_the_whole_pass(
    agent: Agent, installed: dict[str, Any], passes: list[str]
) -> None:
    import fcntl

    fd = os.open(agent.state / ".exthandler" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out, err = _cli(*_apply_argv(agent, "--json"))
    finally:
        os.close(fd)
    assert code == 3  # locked: said by the whole pass, as before
    assert "another exthandler runtime" in err
    assert out == ""


def test_a_pass_showing_a_transitioning_status_keeps_no_stamp(
    agent: Agent, packages: Packages, passes: list[str]
) -> None:
    packages.build(
        "Test.Ext",
        actions={"enable": 'write_status transitioning 0 "working"'},
    )
    document = goal(extension("ext"), id="g1")
    agent.apply(document)
    _settle()
    agent.apply(document)
    assert not (agent.state / STAMP).exists()
    agent.apply(document)
    assert passes == ["g1", "g1", "g1"]


def test_a_status_written_during_the_pass_is_not_vouched_for(
    agent: Agent, packages: Packages, passes: list[str]
) -> None:
    packages.build("Test.Ext")
    document = goal(extension("ext"), id="g1")
    agent.apply(document)
    status = agent.state / "Test.Ext-1.0.0" / "status" / "0.status"
    os.utime(status)  # just now, as if the handler wrote it while the pass read it
    agent.apply(document)
    assert not (agent.state / STAMP).exists()


def test_a_heartbeat_holds_the_stamp_until_it_would_turn_stale(
    agent: Agent, packages: Packages, passes: list[str]
) -> None:
    message = {"lang": "en-US", "message": "up"}
    heartbeat = {"status": "ready", "code": 0, "formattedMessage": message}
    beat = json.dumps([{"version": 1.0, "heartbeat": heartbeat}])
    packages.build(
        "Test.Ext",
        manifest={"reportHeartbeat": True},
        actions={
            "enable": f"printf '%s' '{beat}' > \"$dir/heartbeat.log\"\n"
            + 'write_status success 0 "enabled"'
        },
    )
    document = goal(extension("ext"), id="g1")
    view = _stamped(agent, document)
    assert view["extensions"][0]["substatuses"][0]["code"].startswith("ComponentStatus/Heartbeat")
    stamp = json.loads((agent.state / STAMP).read_text())
    beat_file = agent.state / "Test.Ext-1.0.0" / "heartbeat.log"
    assert stamp["validUntil"] == pytest.approx(beat_file.stat().st_mtime + 600)
    assert agent.apply(document) == (0, view)
    assert passes == ["g1", "g1"]  # the quiet one ran none
    # Once the heartbeat is stale, the view must say so: a whole pass.
    stamp["validUntil"] = time.time() - 1
    (agent.state / STAMP).write_text(json.dumps(stamp))
    agent.apply(document)
    assert passes == ["g1", "g1", "g1"]


def test_a_status_upload_keeps_every_pass_whole(
    agent: Agent, installed: dict[str, Any], passes: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "status.json"
    code, _ = agent.apply(_document(), "--status-url", target.as_uri())
    assert code == 0
    assert passes == ["g1"]


def test_a_plugin_hearing_of_passes_keeps_them_whole(
    agent: Agent, packages: Packages, passes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from exthandler_sdk import hookimpl

    from exthandler import _plugins

    heard: list[str] = []

    class Listener:
        @hookimpl
        def exthandler_instance_view_changed(self, view: Any) -> None:
            heard.append(view.goal_state_id)

    real = _plugins.make_plugin_manager

    def with_listener(**kwargs: Any) -> Any:
        manager = real(**kwargs)
        manager.register(Listener())
        return manager

    monkeypatch.setattr(_plugins, "make_plugin_manager", with_listener)
    packages.build("Test.Ext")
    document = goal(extension("ext"), id="g1")
    agent.apply(document)
    _settle()
    agent.apply(document)
    agent.apply(document)
    assert passes == ["g1", "g1", "g1"]
    assert not (agent.state / STAMP).exists()
    assert heard[-1] == "g1"


def test_the_stamp_names_inputs_within_the_state_dir_by_their_relative_path(
    agent: Agent, installed: dict[str, Any]
) -> None:
    stamp = json.loads((agent.state / STAMP).read_text())
    assert "Test.One-1.0.0/status/0.status" in stamp["handlers"]
    assert (agent.state / STAMP).stat().st_mode & 0o777 == 0o600


def test_a_handler_served_in_process_keeps_every_pass_whole(
    agent: Agent, passes: list[str]
) -> None:
    # CustomScript, a built-in handler: its code is the package, and no file says when
    # that code changes, so no pass over it is vouched for.
    entry = extension(
        "script",
        "Microsoft.Azure.Extensions.CustomScript",
        "2.1",
        settings={"commandToExecute": "true"},
    )
    document = goal(entry, id="g1")
    code, view = agent.apply(document)
    assert code == 0, view
    _settle()
    for _ in range(2):
        assert agent.apply(document) == (0, view)
    assert passes == ["g1", "g1", "g1"]
    assert not (agent.state / STAMP).exists()


def test_an_unchanged_view_is_flushed_not_rewritten_and_written_again_when_gone(
    tmp_path: Path,
) -> None:
    import anyio

    from exthandler._plugins import make_plugin_manager
    from exthandler._report.liveview import LiveView

    path = tmp_path / "instance-view.json"
    view = LiveView(
        view_path=path, plugins=make_plugin_manager(load_entry_points=False), records=dict
    )
    view.goal_id = "g1"
    anyio.run(lambda: view.publish(durable=True))
    first = path.stat()
    anyio.run(lambda: view.publish(durable=True))  # the same view: the same file
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    written = path.read_bytes()
    path.unlink()  # gone behind the runtime's back: the same view is written again
    anyio.run(lambda: view.publish(durable=True))
    assert path.read_bytes() == written
