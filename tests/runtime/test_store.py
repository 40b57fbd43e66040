"""The store's handler-dir files: HandlerEnvironment.json and HandlerState."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from exthandler._errors import StateDirError
from exthandler._fs import TEMP_SUFFIX
from exthandler._model import HandlerName, Version
from exthandler._plan.planner import HandlerRecord, HandlerState
from exthandler._state.store import Store

HANDLER = HandlerName.parse("Contoso.Demo")
VERSION = Version.parse("1.0.0")


def _store(tmp_path: Path) -> Store:
    store = Store(root=tmp_path / "state", log_root=tmp_path / "log")
    store.root.mkdir(exist_ok=True)
    return store


def test_prepare_lays_out_the_protocol_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    for sub in ("config", "status"):
        assert (directory / sub).stat().st_mode & 0o777 == 0o700
    assert store.events_dir(HANDLER).stat().st_mode & 0o777 == 0o700
    document = json.loads((directory / "HandlerEnvironment.json").read_text())
    folders = document[0]["handlerEnvironment"]
    assert folders["configFolder"] == str(directory / "config")
    assert folders["logFolder"] == str(tmp_path / "log" / "Contoso.Demo")
    assert store.command_log(HANDLER) == tmp_path / "log" / "Contoso.Demo" / "CommandExecution.log"


def test_handler_state_is_written_again_into_a_new_dir_of_the_same_version(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    store.write_handler_state(directory, HandlerState.INSTALLED)
    store.write_handler_state(directory, HandlerState.INSTALLED, "second")
    store.remove_handler_dir(HANDLER, VERSION)
    assert not directory.exists()
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    store.write_handler_state(directory, HandlerState.INSTALLED)
    store.write_handler_state(directory, HandlerState.INSTALLED, "second")
    assert (directory / "config" / "HandlerState").read_text() == "Installed"
    assert (directory / "config" / "second.HandlerState").read_text() == "Installed"


def test_a_removed_dir_leaves_its_name_at_once_and_its_files_at_the_end(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.acquire()
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    store.remove_handler_dir(HANDLER, VERSION)
    assert not directory.exists()
    (doomed,) = (p for p in store.root.iterdir() if p.name.endswith(".removing"))
    assert doomed.name.startswith(f".{directory.name}.")
    assert (doomed / "HandlerEnvironment.json").exists()  # deleted at the end of the pass
    store.empty_trash()
    assert not doomed.exists()
    directory.mkdir()
    store.remove_handler_dir(HANDLER, VERSION)
    store.release()  # a runtime that ends leaves no trash, even without a pass
    assert not [p for p in store.root.iterdir() if p.name.endswith(".removing")]


def test_not_installed_is_written_only_over_another_state(tmp_path: Path) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    state_file = directory / "config" / "HandlerState"
    store.write_handler_state(directory, HandlerState.NOT_INSTALLED)
    assert not state_file.exists()  # no file reads as NotInstalled, as in the reference agent
    store.write_handler_state(directory, HandlerState.INSTALLED)
    store.write_handler_state(directory, HandlerState.NOT_INSTALLED)
    assert state_file.read_text() == "NotInstalled"
    # A dir left by an earlier runtime still says Enabled: it is overwritten.
    state_file.write_text("Enabled")
    fresh = _store_at(store.root, tmp_path)
    fresh.write_handler_state(directory, HandlerState.NOT_INSTALLED)
    assert state_file.read_text() == "NotInstalled"


def test_handler_state_without_a_config_dir_is_skipped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    store.write_handler_state(directory, HandlerState.ENABLED)  # no dir: nothing, no error
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    store.write_handler_state(directory, HandlerState.ENABLED)
    assert (directory / "config" / "HandlerState").read_text() == "Enabled"


def test_leftovers_are_swept_only_after_a_runtime_that_did_not_end_cleanly(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    store.acquire()
    assert store.needs_sweep is False  # a new state dir has nothing to sweep
    store.release()
    again = _store_at(store.root, tmp_path)
    again.acquire()
    assert again.needs_sweep is False
    leftover = store.root / f".HandlerEnvironment.json.1-1{TEMP_SUFFIX}"
    leftover.write_text("")
    # A holder killed -9 leaves its pid in the lock file; emulate that end of it.
    assert again.state._lock_fd is not None
    os.close(again.state._lock_fd)
    killed = _store_at(store.root, tmp_path)
    killed.acquire()
    assert killed.needs_sweep is True
    killed.sweep()
    assert not leftover.exists()
    assert not _needs_sweep(killed)  # once per runtime is enough
    killed.release()


def _store_at(root: Path, tmp_path: Path) -> Store:
    return Store(root=root, log_root=tmp_path / "log")


def _records_store(tmp_path: Path) -> Store:
    store = _store(tmp_path)
    store.acquire()
    return store


def _generation(store: Store) -> int:
    document = json.loads(store.snapshot_path.read_text())
    return int(document["generation"])


def test_a_load_after_no_change_keeps_the_snapshot_and_journal(tmp_path: Path) -> None:
    store = _records_store(tmp_path)
    record = HandlerRecord(handler=HANDLER, version=VERSION, state=HandlerState.ENABLED)
    assert store.load_records() == {}
    anyio.run(store.save_record, record)
    assert store.load_records() == {HANDLER: record}  # a change: compacted
    generation = _generation(store)
    before = store.snapshot_path.stat().st_ino
    assert store.load_records() == {HANDLER: record}  # nothing new: left as it is
    assert _generation(store) == generation
    assert store.snapshot_path.stat().st_ino == before
    later = record.replace(state=HandlerState.INSTALLED)
    anyio.run(store.save_record, later)  # appended to the journal that went on
    store.release()
    again = _store_at(store.root, tmp_path)
    again.acquire()
    assert again.load_records() == {HANDLER: later}
    assert _generation(again) == generation + 1
    again.release()


def test_a_torn_journal_is_compacted_rather_than_appended_to(tmp_path: Path) -> None:
    store = _records_store(tmp_path)
    record = HandlerRecord(handler=HANDLER, version=VERSION, state=HandlerState.ENABLED)
    store.load_records()
    anyio.run(store.save_record, record)
    store.load_records()
    store.release()
    with store.journal_path.open("ab") as journal:
        journal.write(b'{"key": "contoso.demo", "rec')  # a power loss mid-append
    again = _store_at(store.root, tmp_path)
    again.acquire()
    assert again.load_records() == {HANDLER: record}
    later = record.replace(state=HandlerState.INSTALLED)
    anyio.run(again.save_record, later)
    again.release()
    third = _store_at(store.root, tmp_path)
    third.acquire()
    assert third.load_records() == {HANDLER: later}
    third.release()


def _needs_sweep(store: Store) -> bool:
    return store.needs_sweep


# -- modes whatever the umask, and state dirs others could change ---------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask of a badly configured service manager; restored afterwards."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_every_dir_and_file_gets_its_mode_whatever_the_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    store = Store(root=tmp_path / "var" / "state", log_root=tmp_path / "logs" / "root")
    store.acquire()
    try:
        assert _mode(store.root) == _mode(store.root.parent) == 0o755
        assert _mode(store.log_root) == _mode(store.log_root.parent) == 0o755
        assert _mode(store.meta) == 0o700
        assert _mode(store.meta / "lock") == 0o600
        store.digest_key()
        assert _mode(store.meta / "digest.key") == 0o600
        store.log("a line")
        assert _mode(store.log_path) == 0o600
        directory = store.handler_dir(HANDLER, VERSION)
        directory.mkdir(mode=0o755)
        store.prepare_handler_dir(HANDLER, VERSION)
        assert _mode(store.log_dir(HANDLER)) == 0o755
        assert _mode(store.events_dir(HANDLER)) == 0o700
        assert _mode(directory / "config") == _mode(directory / "status") == 0o700
        assert _mode(directory / "HandlerEnvironment.json") == 0o644
        store.write_handler_state(directory, HandlerState.ENABLED)
        assert _mode(directory / "config" / "HandlerState") == 0o644
    finally:
        store.release()


@pytest.mark.parametrize("which", ["root", "log_root"])
@pytest.mark.parametrize(
    ("mode", "who"), [(0o777, "group and others"), (0o775, "group"), (0o757, "others")]
)
def test_a_state_dir_or_log_root_others_can_write_is_refused(
    tmp_path: Path, which: str, mode: int, who: str
) -> None:
    store = Store(root=tmp_path / "state", log_root=tmp_path / "log")
    path: Path = getattr(store, which)
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(StateDirError) as caught:
        store.acquire()
    message = str(caught.value)
    assert message.startswith(f"{path}: writable by {who} (mode 0{mode:o})")
    assert "\n" not in message
    assert not (store.root / ".exthandler" / "lock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another user needs root")
@pytest.mark.parametrize("which", ["root", "log_root"])
def test_a_state_dir_or_log_root_another_user_owns_is_refused(tmp_path: Path, which: str) -> None:
    store = Store(root=tmp_path / "state", log_root=tmp_path / "log")
    path: Path = getattr(store, which)
    path.mkdir()
    os.chown(path, 65534, 65534)
    with pytest.raises(StateDirError, match=r"owned by uid 65534, not by uid 0") as caught:
        store.acquire()
    assert str(caught.value).startswith(f"{path}: ")


def test_a_state_dir_that_cannot_be_a_dir_is_a_state_dir_error(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(StateDirError) as caught:
        Store(root=taken, log_root=tmp_path / "log").acquire()
    assert str(caught.value) == f"{taken}: not a directory"
    below = taken / "state"
    with pytest.raises(StateDirError) as caught:
        Store(root=below, log_root=tmp_path / "log").acquire()
    assert str(caught.value) == f"{below}: {os.strerror(errno.ENOTDIR)}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    store = _store(tmp_path)
    store.meta.mkdir(mode=0o700)
    lock = store.meta / "lock"
    if kind == "link":
        lock.symlink_to(outside)
    else:
        os.mkfifo(lock)
    with pytest.raises(StateDirError) as caught:
        store.acquire()
    assert str(caught.value).startswith(f"{lock}: ")
    assert outside.read_text() == "precious\n"


def test_a_linked_meta_dir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    store = _store(tmp_path)
    store.meta.symlink_to(elsewhere)
    with pytest.raises(StateDirError, match="a symbolic link"):
        store.acquire()
    assert _mode(elsewhere) == 0o755
    assert list(elsewhere.iterdir()) == []


# -- links a handler plants in its handler dir and log dir ----------------------------------


def _outside_dir(tmp_path: Path) -> Path:
    """A dir outside every handler dir, shared like /tmp, with a file in it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o1777)
    (elsewhere / "precious").write_text("precious\n")
    return elsewhere


def _untouched(elsewhere: Path) -> bool:
    return elsewhere.stat().st_mode & 0o7777 == 0o1777 and sorted(
        p.name for p in elsewhere.iterdir()
    ) == ["precious"]


@pytest.mark.parametrize("planted", ["config", "status", "log", "events"])
def test_prepare_replaces_a_linked_dir_instead_of_following_it(
    tmp_path: Path, planted: str
) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    elsewhere = _outside_dir(tmp_path)
    paths = {
        "config": directory / "config",
        "status": directory / "status",
        "log": store.log_dir(HANDLER),
        "events": store.events_dir(HANDLER),
    }
    link = paths[planted]
    shutil.rmtree(link)
    link.symlink_to(elsewhere)
    store.prepare_handler_dir(HANDLER, VERSION)
    assert _untouched(elsewhere)
    for path in paths.values():
        assert not path.is_symlink()
        assert path.is_dir()
    assert _mode(link) == (0o755 if planted == "log" else 0o700)


def test_handler_state_is_not_written_through_a_linked_config_dir(tmp_path: Path) -> None:
    store = _store(tmp_path)
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    elsewhere = _outside_dir(tmp_path)
    (directory / "config").rmdir()
    (directory / "config").symlink_to(elsewhere)
    store.write_handler_state(directory, HandlerState.ENABLED)
    assert _untouched(elsewhere)
    assert not (directory / "config").is_symlink()
    assert (directory / "config" / "HandlerState").read_text() == "Enabled"
    assert _mode(directory / "config") == 0o700


@pytest.mark.timeout(60)
def test_copy_state_copies_regular_files_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old, new = Version.parse("1.0.0"), Version.parse("2.0.0")
    source, destination = store.handler_dir(HANDLER, old), store.handler_dir(HANDLER, new)
    for directory, version in ((source, old), (destination, new)):
        directory.mkdir()
        store.prepare_handler_dir(HANDLER, version)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.mkfifo(source / "mrseq")
    (source / "status" / "0.status").write_text("[]")
    (source / "status" / "1.status").symlink_to(outside)
    os.mkfifo(source / "status" / "2.status")
    with (source / "status" / "3.status").open("wb") as huge:
        huge.truncate(1 << 30)  # sparse: costs no disk
    elsewhere = _outside_dir(tmp_path)
    (destination / "status").rmdir()
    (destination / "status").symlink_to(elsewhere)
    store.copy_state(HANDLER, old, new)
    assert _untouched(elsewhere)
    assert not (destination / "status").is_symlink()
    assert sorted(p.name for p in (destination / "status").iterdir()) == ["0.status"]
    assert not (destination / "mrseq").exists()
    log = store.log_path.read_text()
    for name in ("mrseq", "status/1.status", "status/2.status", "status/3.status"):
        assert f"{source / name}: not carried over: " in log


def test_copy_state_does_not_read_a_linked_status_dir(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old, new = Version.parse("1.0.0"), Version.parse("2.0.0")
    source, destination = store.handler_dir(HANDLER, old), store.handler_dir(HANDLER, new)
    for directory, version in ((source, old), (destination, new)):
        directory.mkdir()
        store.prepare_handler_dir(HANDLER, version)
    (source / "mrseq").write_text("4\n")
    elsewhere = _outside_dir(tmp_path)
    (source / "status").rmdir()
    (source / "status").symlink_to(elsewhere)
    store.copy_state(HANDLER, old, new)
    assert (destination / "mrseq").read_text() == "4\n"
    assert list((destination / "status").iterdir()) == []


def test_sweep_does_not_descend_into_links(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.acquire()
    directory = store.handler_dir(HANDLER, VERSION)
    directory.mkdir()
    store.prepare_handler_dir(HANDLER, VERSION)
    elsewhere = _outside_dir(tmp_path)
    theirs = elsewhere / f".settings.1-1{TEMP_SUFFIX}"
    theirs.write_text("not the runtime's")
    (directory / "config").rmdir()
    (directory / "config").symlink_to(elsewhere)
    (store.root / f"Other.Ext-1.0{TEMP_SUFFIX}").symlink_to(elsewhere)
    ours = directory / f".HandlerEnvironment.json.1-1{TEMP_SUFFIX}"
    ours.write_text("")
    store.sweep()
    store.release()
    assert theirs.exists()
    assert not ours.exists()


def test_the_runtime_log_is_not_written_through_a_link(tmp_path: Path) -> None:
    store = _store(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    store.log_path.symlink_to(outside)
    store.log("a line")
    assert outside.read_text() == "precious\n"
    assert store.log_path.read_text().endswith(" a line\n")
    assert _mode(store.log_path) == 0o600


@pytest.mark.timeout(60)
def test_a_fifo_in_place_of_the_digest_key_is_replaced(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.meta.mkdir(mode=0o700)
    os.mkfifo(store.meta / "digest.key")
    key = store.digest_key()
    assert len(key) == 32
    assert store.digest_key() == key
