"""A state dir that is full, read-only, unusable or damaged: one clear line, the right exit
status, nothing lost, and no command run twice.

The full and read-only cases run on a small tmpfs mounted for the test (root only).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.runtime.support import Agent, Packages, extension, goal, status_of, view_of


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"a small file system cannot be mounted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def _apply(agent: Agent, state: Path, document: dict[str, object]) -> tuple[int, str]:
    agent.goal_path.write_text(json.dumps(document))
    return agent.cli(
        "apply", str(agent.goal_path), "--state-dir", str(state), "--repo", str(agent.repo)
    )


def _one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], err


def test_a_full_disk_during_extraction_fails_the_extension_and_is_retried(
    agent: Agent, packages: Packages, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0", files={"blob.bin": os.urandom(1536 * 1024).hex()[:2]})
    big = packages.repo / "Test.Big__1.0.0.zip"
    import zipfile

    with (
        zipfile.ZipFile(packages.build("Test.Big", "1.0.0")) as small,
        zipfile.ZipFile(big.with_suffix(".tmp"), "w") as out,
    ):
        for info in small.infolist():
            out.writestr(info, small.read(info))
        out.writestr("blob.bin", os.urandom(1536 * 1024))  # incompressible: does not fit
    big.with_suffix(".tmp").replace(big)
    state = small_disk / "state"
    # The big package comes second (it depends on the small one): what fills the disk is
    # its extraction alone, never the small handler's own files.
    document = goal(
        extension("ext"), extension("big", "Test.Big", provisionAfterExtensions=["ext"])
    )
    code, _ = _apply(agent, state, document)
    assert code == 1
    view = json.loads(agent.cli("status", "--state-dir", str(state), "--json")[1])
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    big_status = status_of(view, "big")
    assert big_status["code"].startswith("ProvisioningState/failed/")
    assert "No space left on device" in big_status["message"]
    assert not (state / "Test.Big-1.0.0").exists()
    capsys.readouterr()

    _remount(small_disk, "size=16m")
    agent.take_ops()
    code, _ = _apply(agent, state, document)
    assert code == 0
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Big-1.0.0",
        "enable Test.Big-1.0.0",
    ]


def test_a_full_disk_under_the_runtimes_own_files_is_one_line_and_exit_2(
    agent: Agent, packages: Packages, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0")
    state = small_disk / "state"
    code, _ = _apply(agent, state, goal(extension("ext")))
    assert code == 0
    agent.take_ops()
    capsys.readouterr()
    fill = small_disk / "fill"
    subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=4096"], capture_output=True)
    code, _ = _apply(agent, state, goal(extension("ext", settings={"n": 1})))
    assert code == 2
    _one_line(capsys.readouterr().err, "No space left on device", str(state))
    assert agent.take_ops() == []
    fill.unlink()
    code, _ = _apply(agent, state, goal(extension("ext", settings={"n": 1})))
    assert code == 0
    assert [(op.short, op.env["ConfigSequenceNumber"]) for op in agent.take_ops()] == [
        ("enable Test.Ext-1.0.0", "1")
    ]


def test_a_journal_that_cannot_grow_stops_the_pass_with_a_state_dir_error(
    small_disk: Path,
) -> None:
    # The disk fills while a pass runs: the next record cannot be appended. Progress that
    # cannot be recorded must not go on (a crash would repeat it): StateDirError, which
    # the CLI reports as one line and exit 2.
    from exthandler._errors import StateDirError
    from exthandler._model import HandlerName, Version
    from exthandler._plan.planner import HandlerRecord
    from exthandler._state.store import Store

    store = Store(root=small_disk / "state", log_root=small_disk / "state" / "log")
    store.acquire()
    try:
        store.load_records()
        subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'fill'}", "bs=4096"], check=False)
        record = HandlerRecord(
            handler=HandlerName.parse("Test.Ext"),
            version=Version.parse("1.0.0"),
            last_errors={"": (1, "x" * 16384)},
        )
        with pytest.raises(StateDirError) as raised:
            anyio.run(store.save_record, record)
        assert str(raised.value).startswith(f"{store.journal_path}: cannot record progress:")
        assert "No space left on device" in str(raised.value)
    finally:
        store.release()


def test_a_read_only_state_dir_is_one_line_and_exit_2(
    agent: Agent, packages: Packages, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0")
    state = small_disk / "state"
    code, _ = _apply(agent, state, goal(extension("ext")))
    assert code == 0
    capsys.readouterr()
    _remount(small_disk, "ro")
    code, _ = _apply(agent, state, goal(extension("ext", settings={"n": 1})))
    assert code == 2
    _one_line(capsys.readouterr().err, str(state))


@pytest.mark.parametrize("kind", ["file", "proc", "missing-parent-file"])
def test_an_unusable_state_dir_is_one_line_and_exit_2(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    packages.build("Test.Ext", "1.0.0")
    if kind == "file":
        state = agent.root / "a-file"
        state.write_text("not a dir")
    elif kind == "proc":
        state = Path("/proc/x/y")
    else:
        (agent.root / "plain").write_text("")
        state = agent.root / "plain" / "state"
    code, _ = _apply(agent, state, goal(extension("ext")))
    assert code == 2
    _one_line(capsys.readouterr().err)
    assert agent.take_ops() == []


def test_status_of_a_missing_or_unreadable_state_dir_is_exit_2(
    agent: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = agent.cli("status", "--state-dir", str(agent.root / "nothing"), "--json")
    assert code == 2
    assert out == ""
    _one_line(capsys.readouterr().err, "nothing")
    (agent.root / "file").write_text("")
    code, out = agent.cli("status", "--state-dir", str(agent.root / "file"))
    assert code == 2
    _one_line(capsys.readouterr().err, "file")
    broken = agent.root / "broken"
    (broken / ".exthandler" / "instance-view.json").mkdir(parents=True)
    code, out = agent.cli("status", "--state-dir", str(broken))
    assert code == 2
    _one_line(capsys.readouterr().err, "instance-view.json")


# -- a damaged journal ------------------------------------------------------------------


def _installed(agent: Agent, packages: Packages, *extensions: dict[str, object]) -> None:
    code, _ = agent.apply(goal(*extensions))
    assert code == 0
    agent.take_ops()


@pytest.mark.parametrize("damage", ["garbage", "not-a-snapshot", "bad-record"])
def test_damaged_records_are_rebuilt_and_nothing_is_installed_again(
    agent: Agent, packages: Packages, damage: str
) -> None:
    packages.build("Test.Ext", "1.0.0")
    packages.build("Test.Other", "1.0.0")
    document = goal(
        extension("ext", settings={"n": 1}), extension("other", "Test.Other", settings={"n": 2})
    )
    _installed(agent, packages, *document["extensions"])
    code, _ = agent.apply(document)  # once more, so that records.json holds everything
    assert code == 0
    records = agent.state / ".exthandler" / "records.json"
    journal = agent.state / ".exthandler" / "journal"
    handler_dir = agent.state / "Test.Ext-1.0.0"
    inode = handler_dir.stat().st_ino
    if damage == "garbage":
        records.write_bytes(b"\x00garbage{")
        journal.write_bytes(b"")
    elif damage == "not-a-snapshot":
        records.write_text("[1, 2, 3]")
        journal.write_bytes(b"")
    else:
        snapshot = json.loads(records.read_text())
        snapshot["records"]["test.ext"]["version"] = "not a version"
        records.write_text(json.dumps(snapshot))
    code, view = agent.apply(document)
    assert code == 0, view
    ops = agent.take_ops()
    assert [op.op for op in ops if op.op != "enable"] == []  # no install, no uninstall
    # At most the enable runs once more, with the sequence number it had (as after a reboot).
    assert {op.env["ConfigSequenceNumber"] for op in ops} <= {"0"}
    assert handler_dir.stat().st_ino == inode  # never deleted and laid out again
    assert view_of(view, "ext")["handlerState"] == "Enabled"
    assert view_of(view, "ext")["sequenceNumber"] == 0
    assert "rebuilt" in (agent.state / "exthandler.log").read_text()
    code, view = agent.apply(document)
    assert code == 0
    assert agent.take_ops() == []  # and from then on, nothing runs for an unchanged goal
    changed = goal(
        extension("ext", settings={"n": 3}), extension("other", "Test.Other", settings={"n": 2})
    )
    code, view = agent.apply(changed)
    assert code == 0
    assert [(op.short, op.env["ConfigSequenceNumber"]) for op in agent.take_ops()] == [
        ("enable Test.Ext-1.0.0", "1")
    ]


def test_rebuilt_multi_config_records_keep_every_extension(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Multi", "1.0.0", manifest={"supportsMultipleExtensions": True})
    document = goal(extension("a", "Test.Multi"), extension("b", "Test.Multi"))
    _installed(agent, packages, *document["extensions"])
    (agent.state / ".exthandler" / "records.json").write_text("{")
    (agent.state / ".exthandler" / "journal").write_bytes(b"")
    code, view = agent.apply(document)
    assert code == 0, view
    ops = agent.take_ops()
    assert all(op.op == "enable" for op in ops)
    assert {op.env.get("ConfigExtensionName") for op in ops} <= {"a", "b"}
    # Dropping one from the goal disables it: the rebuilt record knew it was enabled.
    code, view = agent.apply(goal(extension("a", "Test.Multi")))
    assert code == 0
    assert [(op.op, op.env.get("ConfigExtensionName")) for op in agent.take_ops()] == [
        ("disable", "b")
    ]


def test_rebuilt_records_read_nothing_through_a_link_the_handler_planted(tmp_path: Path) -> None:
    from exthandler._model import HandlerName
    from exthandler._plan.planner import HandlerState
    from exthandler._state.recover import rebuild_records

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "HandlerState").write_text("Enabled")
    (outside / "7.settings").write_text("{}")
    handler_dir = tmp_path / "state" / "Test.Ext-1.0.0"
    handler_dir.mkdir(parents=True)
    (handler_dir / "HandlerManifest.json").write_text("[]")
    (handler_dir / "config").symlink_to(outside)
    records = rebuild_records(tmp_path / "state", skip=set(), view=None)
    record = records[HandlerName.parse("Test.Ext")]
    assert record.state is HandlerState.NOT_INSTALLED
    assert record.extensions == ()
