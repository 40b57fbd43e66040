"""The store's handler-dir files: HandlerEnvironment.json and HandlerState."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import attrs

from exthandler._fs import TEMP_SUFFIX
from exthandler._model import HandlerName, Version
from exthandler._plan import HandlerRecord, HandlerState
from exthandler._store import Store

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
    assert again._lock_fd is not None
    os.close(again._lock_fd)
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
    later = attrs.evolve(record, state=HandlerState.INSTALLED)
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
    later = attrs.evolve(record, state=HandlerState.INSTALLED)
    anyio.run(again.save_record, later)
    again.release()
    third = _store_at(store.root, tmp_path)
    third.acquire()
    assert third.load_records() == {HANDLER: later}
    third.release()


def _needs_sweep(store: Store) -> bool:
    return store.needs_sweep
