"""The one durable-write seam: atomic replacement, modes, cleanup, the journal append."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from exthandler_sdk import _environment

from exthandler import _fs
from exthandler._fs import TEMP_SUFFIX, append_durable, write_atomic


@pytest.fixture
def restrictive_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    previous = os.umask(0o077)
    monkeypatch.setattr(_fs, "UMASK", 0o077)
    monkeypatch.setattr(_environment, "UMASK", 0o077)
    yield
    os.umask(previous)


@pytest.mark.parametrize("durable", [True, False])
def test_replaces_atomically_with_the_mode_asked_for(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "file"
    target.write_text("old")
    write_atomic(target, b"new", mode=0o640, durable=durable)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [target]


def test_a_restrictive_umask_does_not_narrow_the_mode(
    tmp_path: Path, restrictive_umask: None
) -> None:
    write_atomic(tmp_path / "env.json", b"{}", mode=0o644)
    assert (tmp_path / "env.json").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "file", b"data")
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))
    assert not (tmp_path / "file").exists()


def test_append_durable_appends(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        append_durable(fd, b"one\n")
        append_durable(fd, b"two\n")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"one\ntwo\n"


def test_a_temp_file_left_by_an_earlier_process_with_our_pid_is_stepped_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_environment, "_temp_counter", iter([7, 8]))
    stale = tmp_path / f".file.{os.getpid()}-7{TEMP_SUFFIX}"
    stale.write_text("left by a killed runtime")
    write_atomic(tmp_path / "file", b"new")
    assert (tmp_path / "file").read_bytes() == b"new"
    assert stale.read_text() == "left by a killed runtime"  # the sweep's job, not ours


def test_make_dir_creates_parents_and_sets_the_mode(
    tmp_path: Path, restrictive_umask: None
) -> None:
    target = tmp_path / "a" / "b"
    _fs.make_dir(target, 0o750)
    assert target.stat().st_mode & 0o777 == 0o750
    target.chmod(0o755)  # an existing dir of someone else's gets the mode too
    _fs.make_dir(target, 0o700)
    assert target.stat().st_mode & 0o777 == 0o700


def test_make_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(FileExistsError):
        _fs.make_dir(tmp_path / "taken")


def test_write_unless_same_keeps_a_file_that_already_holds_the_data(tmp_path: Path) -> None:
    target = tmp_path / "0.settings"
    _fs.write_unless_same(target, b"{}", mode=0o600)
    inode = target.stat().st_ino
    _fs.write_unless_same(target, b"{}", mode=0o600)
    assert target.stat().st_ino == inode  # not replaced: no inode freed


@pytest.mark.parametrize(
    ("old", "old_mode"),
    [(b"{", 0o600), (b"{}{}", 0o600), (b"", 0o600), (b"{}", 0o644)],
    ids=["shorter", "longer", "empty", "wrong-mode"],
)
def test_write_unless_same_replaces_a_file_that_differs(
    tmp_path: Path, old: bytes, old_mode: int
) -> None:
    target = tmp_path / "0.settings"
    target.write_bytes(old)
    target.chmod(old_mode)
    _fs.write_unless_same(target, b"{}", mode=0o600)
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o777 == 0o600


def test_write_unless_same_creates_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "0.settings"
    _fs.write_unless_same(target, b"", mode=0o600)
    assert target.read_bytes() == b""
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_missing_directory_is_an_error_not_created(tmp_path: Path) -> None:
    """A handler dir being removed must not come back because a late write made its
    config/ again."""
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "gone" / "config" / "HandlerState", b"Enabled")
    assert not (tmp_path / "gone").exists()
