"""The one durable-write seam: atomic replacement, modes, cleanup, the journal append."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from exthandler_sdk import _files as _environment

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
    def refuse(source: object, destination: object, **where: object) -> None:
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


# -- files a handler may have planted: links, FIFOs, huge files -----------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file no handler-dir operation may touch."""
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious\n")
    return target


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask of a badly configured service manager; restored afterwards."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.timeout(60)
def test_read_regular_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "0.status"
    os.mkfifo(fifo)
    with pytest.raises(_fs.UnsafeFileError, match="a FIFO, not a regular file"):
        _fs.read_regular(fifo)


def test_read_regular_does_not_follow_a_link(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "heartbeat.log"
    link.symlink_to(outside)
    with pytest.raises(_fs.UnsafeFileError, match="a symbolic link") as caught:
        _fs.read_regular(link)
    assert caught.value.errno == errno.ELOOP
    assert caught.value.filename == str(link)


def test_read_regular_refuses_a_huge_file_unread(tmp_path: Path) -> None:
    huge = tmp_path / "0.status"
    with huge.open("wb") as file:
        file.truncate(1 << 30)  # sparse: costs no disk
    with pytest.raises(_fs.UnsafeFileError, match=f"larger than {_fs.READ_LIMIT} bytes") as caught:
        _fs.read_regular(huge)
    assert caught.value.errno == errno.EFBIG


@pytest.mark.parametrize(("size", "ok"), [(100, True), (101, False)])
def test_read_regular_cap_is_inclusive(tmp_path: Path, size: int, ok: bool) -> None:
    path = tmp_path / "mrseq"
    path.write_bytes(b"7" * size)
    if ok:
        assert _fs.read_regular(path, 100) == b"7" * size
    else:
        with pytest.raises(_fs.UnsafeFileError):
            _fs.read_regular(path, 100)


def test_open_regular_gives_the_size_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "0.status"
    path.write_bytes(b"x" * (_fs.INLINE_LIMIT + 1))
    with _fs.open_regular(path) as file:
        assert file.size > _fs.INLINE_LIMIT  # the caller would hand it to a thread
        assert os.lseek(file.fd, 0, os.SEEK_CUR) == 0  # nothing read yet
        assert file.read() == path.read_bytes()


def test_make_dir_replaces_a_link_instead_of_chmodding_its_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    config = tmp_path / "handler" / "config"
    config.parent.mkdir()
    config.symlink_to(shared)
    _fs.make_dir(config, 0o700)
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert not config.is_symlink()
    assert config.stat().st_mode & 0o777 == 0o700


def test_make_dir_gives_parents_an_explicit_mode_whatever_the_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    events = tmp_path / "log" / "Contoso.Demo" / "events"
    _fs.make_dir(events, 0o700)
    assert events.stat().st_mode & 0o777 == 0o700
    assert events.parent.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o755


def test_write_unless_same_refuses_a_linked_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tmp_path / "config"
    config.symlink_to(elsewhere)
    with pytest.raises(_fs.UnsafeFileError, match="a symbolic link"):
        _fs.write_unless_same(config / "0.settings", b"{}", mode=0o600)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.timeout(60)
def test_write_unless_same_replaces_a_fifo_without_blocking(tmp_path: Path) -> None:
    settings = tmp_path / "0.settings"
    os.mkfifo(settings)
    _fs.write_unless_same(settings, b"{}", mode=0o600)
    assert settings.read_bytes() == b"{}"


def test_write_unless_same_replaces_a_link_at_the_name(tmp_path: Path, outside: Path) -> None:
    settings = tmp_path / "0.settings"
    settings.symlink_to(outside)
    _fs.write_unless_same(settings, b"{}", mode=0o600)
    assert not settings.is_symlink()
    assert settings.read_bytes() == b"{}"
    assert outside.read_bytes() == b"precious\n"


def test_copy_regular_copies_regular_files_only(tmp_path: Path, outside: Path) -> None:
    source, destination = tmp_path / "old", tmp_path / "new"
    source.mkdir()
    destination.mkdir()
    (source / "0.status").write_bytes(b"[]")
    (source / "0.status").chmod(0o640)
    (source / "1.status").symlink_to(outside)
    os.mkfifo(source / "2.status")
    source_fd, destination_fd = _fs.open_dir(source), _fs.open_dir(destination)
    try:
        _fs.copy_regular("0.status", source_fd, destination_fd)
        for name in ("1.status", "2.status"):
            with pytest.raises(_fs.UnsafeFileError):
                _fs.copy_regular(name, source_fd, destination_fd)
        (source / "3.status").write_bytes(b"x" * 11)
        with pytest.raises(_fs.UnsafeFileError, match="larger than 10 bytes"):
            _fs.copy_regular("3.status", source_fd, destination_fd, cap=10)
    finally:
        os.close(source_fd)
        os.close(destination_fd)
    assert sorted(p.name for p in destination.iterdir()) == ["0.status"]
    assert (destination / "0.status").read_bytes() == b"[]"
    assert (destination / "0.status").stat().st_mode & 0o777 == 0o640


@pytest.mark.timeout(60)
@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_open_append_replaces_what_is_planted_at_the_log(
    tmp_path: Path, outside: Path, planted: str
) -> None:
    log = tmp_path / "CommandExecution.log"
    if planted == "link":
        log.symlink_to(outside)
    else:
        os.mkfifo(log)
    fd, size = _fs.open_append(log, 0o600)
    try:
        os.write(fd, b"entry\n")
    finally:
        os.close(fd)
    assert size == 0
    assert log.read_bytes() == b"entry\n"
    assert log.stat().st_mode & 0o777 == 0o600
    assert outside.read_bytes() == b"precious\n"


def test_open_append_narrows_a_loose_mode(tmp_path: Path) -> None:
    log = tmp_path / "exthandler.log"
    log.write_bytes(b"old\n")
    log.chmod(0o666)
    fd, size = _fs.open_append(log, 0o600)
    os.close(fd)
    assert size == 4
    assert log.stat().st_mode & 0o777 == 0o600


def test_settings_written_through_a_dir_fd_land_in_the_dir_that_was_checked(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir(mode=0o777)
    fd = _fs.mode_dir(config, 0o700)
    try:
        assert config.stat().st_mode & 0o777 == 0o700  # an existing dir gets the mode
        # The handler swaps config/ for a link between the check and the write.
        moved = tmp_path / "moved"
        config.rename(moved)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        config.symlink_to(elsewhere)
        _fs.write_unless_same("0.settings", b"{}", mode=0o600, dir_fd=fd)
    finally:
        os.close(fd)
    assert (moved / "0.settings").read_bytes() == b"{}"
    assert list(elsewhere.iterdir()) == []


def test_a_new_dir_is_made_with_its_mode_in_one_syscall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(_fs, "UMASK", 0o022)
    _fs.make_dir(tmp_path / "fresh", 0o700)
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
    assert opened == []  # made where nothing was: nothing to open or chmod
    (tmp_path / "fresh").chmod(0o755)
    _fs.make_dir(tmp_path / "fresh", 0o700)  # there already: opened and given the mode
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
    assert opened
