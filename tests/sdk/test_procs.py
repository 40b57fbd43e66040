"""Process identity: real processes, real /proc, real files in tmp_path."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from exthandler_sdk._procs import (
    BOOT_ID_PATH,
    ProcessIdentity,
    identify,
    read_boot_id,
    read_identity,
    start_time,
    still_running,
)


def test_start_time_is_field_22_of_proc_stat() -> None:
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    # Field 2 may hold spaces; counted from the right of it, field 22 is the 20th after.
    assert start_time(os.getpid()) == stat.rpartition(")")[2].split()[19]


def test_start_time_of_a_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    program = tmp_path / "odd) name ("
    program.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(program), "30"])
    try:
        # The kernel renames the child a moment after Popen may return (vfork): wait for it.
        deadline = time.monotonic() + 60
        while ")" not in Path(f"/proc/{child.pid}/comm").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        fields = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()
        assert start_time(child.pid) == fields[19]
    finally:
        child.kill()
        child.wait()


def test_no_such_process_has_no_start_time() -> None:
    assert start_time(2**22 + 1) is None  # above the kernel's largest pid
    assert identify(2**22 + 1) is None


def test_boot_id(tmp_path: Path) -> None:
    assert read_boot_id() == BOOT_ID_PATH.read_text().strip()
    custom = tmp_path / "boot_id"
    custom.write_text("boot-7\n")
    assert read_boot_id(custom) == "boot-7"
    custom.write_text("boot-8\n")  # a file of a test's own is read anew each time
    assert read_boot_id(custom) == "boot-8"
    assert read_boot_id(tmp_path / "missing") is None
    custom.write_text("\n")
    assert read_boot_id(custom) is None


def test_a_process_is_itself_until_it_is_gone(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    identity = identify(child.pid)
    assert identity is not None
    assert identity.pid == child.pid
    assert identity.boot == read_boot_id()
    assert still_running(identity)
    assert ProcessIdentity.parse(identity.to_json()) == identity
    boot = tmp_path / "boot_id"
    boot.write_text("another boot\n")
    assert not still_running(identity, boot_id_path=boot)  # the same pid after a reboot
    assert not still_running(ProcessIdentity(pid=child.pid, start="1", boot=identity.boot))
    child.kill()
    child.wait()
    assert not still_running(identity)


@pytest.mark.parametrize(
    "record",
    [
        "",
        "1234\n",
        "{not json",
        "[1, 2]",
        '{"pid": 1234}',
        '{"pid": 1234, "start": null, "boot": "b"}',
        '{"pid": 1234, "start": "99", "boot": ""}',
        '{"pid": "1234", "start": "99", "boot": "b"}',
        '{"pid": true, "start": "99", "boot": "b"}',
        '{"pid": 1, "start": "99", "boot": "b"}',
        '{"pid": 0, "start": "99", "boot": "b"}',
        '{"pid": -5, "start": "99", "boot": "b"}',
    ],
)
def test_records_that_name_no_process(record: str) -> None:
    assert ProcessIdentity.parse(record) is None


def test_read_identity_follows_no_link_blocks_on_no_fifo_and_caps_its_read(
    tmp_path: Path,
) -> None:
    identity = ProcessIdentity(pid=4321, start="99", boot="b")
    real = tmp_path / "pid"
    real.write_text(identity.to_json())
    assert read_identity(real) == identity
    link = tmp_path / "link"
    link.symlink_to(real)
    assert read_identity(link) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_identity(fifo) is None  # returns at once: nobody will ever write to it
    huge = tmp_path / "huge"
    huge.write_text(identity.to_json() + " " * 10_000)
    assert read_identity(huge) is None
    assert read_identity(tmp_path) is None
    assert read_identity(tmp_path / "missing") is None
