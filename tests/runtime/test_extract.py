"""Safe extraction: hostile archives are refused and leave nothing behind."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from exthandler_sdk import ErrorCode, Operation

from exthandler._errors import PackageError
from exthandler._packages.extract import (
    DEFAULT_LIMITS,
    ExtractionLimits,
    _copy_limited,
    extract_package,
)
from exthandler._packages.manifest import MANIFEST_NAME

MANIFEST = (
    b'[{"name": "T", "version": 1.0, "handlerManifest": {'
    b'"installCommand": "bin/run.sh install", "enableCommand": "bin/run.sh enable",'
    b' "disableCommand": "bin/run.sh disable", "uninstallCommand": "bin/run.sh uninstall",'
    b' "updateCommand": "bin/run.sh update"}}]'
)
SCRIPT = b"#!/bin/sh\necho hi\n"

Entry = tuple[str, bytes, int]  # name, content, full Unix mode (type and permissions)


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    return (name, data, stat.S_IFREG | mode)


def d(name: str) -> Entry:
    return (name, b"", stat.S_IFDIR | 0o755)


def link(name: str, target: str | bytes) -> Entry:
    data = target.encode() if isinstance(target, str) else target
    return (name, data, stat.S_IFLNK | 0o777)


def special(name: str, file_type: int) -> Entry:
    return (name, b"", file_type | 0o644)


def make_zip(
    path: Path,
    entries: list[Entry],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    manifest: bool = True,
) -> Path:
    """A zip holding `entries` (and a root manifest unless told otherwise), made by hand."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are the point sometimes
        with zipfile.ZipFile(path, "w") as archive:
            if manifest:
                archive.writestr(MANIFEST_NAME, MANIFEST)
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.create_system = 3
                info.compress_type = method
                info.external_attr = mode << 16
                archive.writestr(info, data)
    return path


def patch_entry(path: Path, name: str, *, central: int, local: int, fmt: str, value: int) -> None:
    """Overwrite one field of `name`'s central and local headers (offsets from each header)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo(name)
    struct.pack_into(fmt, data, info.header_offset + local, value)
    encoded = name.encode()
    start = 0
    while True:
        start = data.index(b"PK\x01\x02", start)
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if bytes(data[start + 46 : start + 46 + name_len]) == encoded:
            struct.pack_into(fmt, data, start + central, value)
            break
        start += 4
    path.write_bytes(bytes(data))


def snapshot(root: Path) -> set[str]:
    """Every path under `root`, links included, relative to it."""
    found: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def assert_refused(
    tmp_path: Path,
    zip_path: Path,
    code: ErrorCode,
    naming: str,
    *,
    limits: ExtractionLimits = DEFAULT_LIMITS,
    target: Path | None = None,
) -> PackageError:
    """Extraction fails with `code`, the message contains `naming`, and nothing is written."""
    target = target if target is not None else tmp_path / "lib" / "Pub.Type-1.0"
    before = snapshot(tmp_path)
    with pytest.raises(PackageError) as caught:
        extract_package(zip_path, target, limits=limits)
    assert caught.value.code == code, caught.value.message
    assert naming in caught.value.message
    assert not target.exists()
    assert snapshot(tmp_path) == before
    return caught.value


HOSTILE: dict[str, tuple[list[Entry], str]] = {
    "absolute": ([f("/etc/evil")], "'/etc/evil'"),
    "parent": ([f("../x")], "'../x'"),
    "nested-parent": ([f("a/../../x")], "'a/../../x'"),
    "parent-only-inside": ([f("a/../x")], "'a/../x'"),
    "drive-letter": ([f("C:/Windows/evil")], "'C:/Windows/evil'"),
    "drive-relative": ([f("c:evil")], "'c:evil'"),
    "backslash": ([f("..\\..\\evil")], "evil"),
    "control-character": ([f("bin/a\nb")], "control characters"),
    "dot-as-file": ([f(".")], "does not name a file"),
    "symlink-absolute": ([link("passwd", "/etc/passwd")], "'passwd'"),
    "symlink-escapes": ([link("up", "../..")], "'up'"),
    "symlink-then-through": ([link("a", "../.."), f("a/evil")], "'a'"),
    "write-through-inside-link": ([d("sub/"), link("a", "sub"), f("a/evil")], "'a/evil'"),
    "symlink-chain-escapes": ([link("l1", "."), link("d/l2", "../l1/..")], "'d/l2'"),
    "symlink-via-link-escapes": ([link("d/l", ".."), link("x", "d/l/../..")], "'x'"),
    "symlink-loop": ([link("x", "y"), link("y", "x")], "loops"),
    "symlink-self": ([link("x", "x")], "'x'"),
    "symlink-empty": ([link("x", "")], "'x'"),
    "symlink-backslash": ([link("x", "..\\..")], "'x'"),
    "symlink-drive": ([link("x", "C:/evil")], "'x'"),
    "symlink-control": ([link("x", "a\nb")], "'x'"),
    "symlink-not-utf8": ([link("x", b"\xff\xfe")], "'x'"),
    "symlink-too-long": ([link("x", "a/" * 3000)], "'x'"),
    "char-device": ([special("dev/null", stat.S_IFCHR)], "'dev/null'"),
    "block-device": ([special("dev/sda", stat.S_IFBLK)], "'dev/sda'"),
    "fifo": ([special("pipe", stat.S_IFIFO)], "'pipe'"),
    "socket": ([special("sock", stat.S_IFSOCK)], "'sock'"),
    "unknown-type": ([special("odd", 0o070000)], "'odd'"),
    "duplicate": ([f("bin/x"), f("bin/x")], "'bin/x'"),
    "duplicate-normalised": ([f("bin/x"), f("./bin//x")], "'./bin//x'"),
    "duplicate-manifest": ([f(MANIFEST_NAME)], MANIFEST_NAME),
    "file-under-file": ([f("a"), f("a/b")], "'a/b'"),
    "dir-and-file": ([f("a"), d("a/")], "'a/'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused(tmp_path: Path, case: str) -> None:
    entries, naming = HOSTILE[case]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, naming)


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    zeros = bytes(50 * 1024 * 1024)
    zip_path = make_zip(tmp_path / "pkg.zip", [f("bomb", zeros)])
    assert zip_path.stat().st_size < 200 * 1024
    error = assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'bomb'")
    assert "zip bomb" in error.message


def test_small_compressible_members_are_fine(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("zeros", bytes(512 * 1024))])
    extract_package(zip_path, tmp_path / "out")
    assert (tmp_path / "out" / "zeros").stat().st_size == 512 * 1024


def test_zip_bomb_of_many_small_members(tmp_path: Path) -> None:
    member = bytes(DEFAULT_LIMITS.ratio_min_size // 2)  # each under the per-member check
    entries = [f(f"part/{i:03}", member) for i in range(256)]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    total = 256 * len(member)
    assert total < DEFAULT_LIMITS.max_total_size
    assert total > 500 * zip_path.stat().st_size  # far beyond 200:1 overall
    error = assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "whole archive")
    assert error.message.startswith(f"{zip_path}: its 257 members expand")
    assert error.message.endswith("(more than 200:1 for the whole archive): a zip bomb")


def test_whole_archive_ratio_limit_is_the_member_one(tmp_path: Path) -> None:
    # Below `ratio_min_size` in total, any ratio is fine; above it, `max_ratio` applies.
    entries = [f(f"z{i}", bytes(100_000)) for i in range(4)]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    size = zip_path.stat().st_size
    total = 4 * 100_000 + len(MANIFEST)
    # Each member is under `ratio_min_size`; together they are over it.
    lenient = ExtractionLimits(max_ratio=total / size, ratio_min_size=150_000)
    extract_package(zip_path, tmp_path / "ok", limits=lenient)
    assert_refused(
        tmp_path,
        zip_path,
        ErrorCode.PACKAGE_EXTRACTION,
        "for the whole archive",
        limits=ExtractionLimits(max_ratio=total / size * 0.99, ratio_min_size=150_000),
    )
    small = ExtractionLimits(max_ratio=1.0, ratio_min_size=total)
    extract_package(zip_path, tmp_path / "small", limits=small)


def test_nothing_made_is_writable_by_others_even_under_umask_0(tmp_path: Path) -> None:
    entries = [
        f("deep/er/x.sh", SCRIPT, 0o777),
        d("open/"),
        f("open/y", b"y", 0o666),
        f("sub/" + MANIFEST_NAME, MANIFEST, 0o666),
        link("deep/alias", "er/x.sh"),
    ]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, manifest=False)
    target = tmp_path / "new" / "parents" / "Pub.Type-1.0"
    previous = os.umask(0)
    try:
        extract_package(zip_path, target)
    finally:
        os.umask(previous)
    made = [tmp_path / "new", tmp_path / "new" / "parents", target]
    made += [Path(d) / n for d, ds, fs in os.walk(target) for n in ds + fs]
    assert len(made) == 12  # the manifest copied to the root included
    for path in made:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        mode = stat.S_IMODE(info.st_mode)
        assert not mode & 0o022, f"{path}: {mode:o}"
        if stat.S_ISDIR(info.st_mode):
            assert mode in (0o700, 0o755), f"{path}: {mode:o}"
        else:
            assert mode & 0o700 == 0o700, f"{path}: {mode:o}"


def test_total_size_limit(tmp_path: Path) -> None:
    entries = [f("a", os.urandom(600)), f("b", os.urandom(600))]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, method=zipfile.ZIP_STORED)
    limits = ExtractionLimits(max_total_size=1000)
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'b'", limits=limits)


def test_declared_size_of_two_gib_is_refused_before_writing(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("huge", b"tiny")], method=zipfile.ZIP_STORED)
    # uncompressed size: offset 24 in the central header, 22 in the local one
    patch_entry(zip_path, "huge", central=24, local=22, fmt="<I", value=2**31)
    error = assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'huge'")
    assert "limit" in error.message


def test_too_many_files(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f(f"f{i}") for i in range(6)])
    limits = ExtractionLimits(max_files=5)
    error = assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'f4'", limits=limits)
    assert "7 entries" in error.message


def test_encrypted_member(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("secret", b"data")])
    # general purpose flags: offset 8 in the central header, 6 in the local one
    patch_entry(zip_path, "secret", central=8, local=6, fmt="<H", value=0x1)
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'secret' is encrypted")


def test_unsupported_compression(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("odd", b"data")], method=zipfile.ZIP_STORED)
    # compression method: offset 10 in the central header, 8 in the local one
    patch_entry(zip_path, "odd", central=10, local=8, fmt="<H", value=99)
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'odd'")


def _corrupt_member(path: Path, payload: bytes) -> None:
    data = path.read_bytes()
    at = data.index(payload)
    path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])


def test_bad_crc_leaves_nothing_even_in_new_parents(tmp_path: Path) -> None:
    payload = b"some content that will be damaged"
    entries = [d("bin/"), f("bin/ok", b"fine"), f("bin/bad", payload)]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, method=zipfile.ZIP_STORED)
    _corrupt_member(zip_path, payload)
    target = tmp_path / "new" / "parents" / "Pub.Type-1.0"
    error = assert_refused(
        tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'bin/bad'", target=target
    )
    assert "CRC" in error.message
    assert not (tmp_path / "new").exists()


def test_broken_deflate_stream(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("data", os.urandom(4096))])
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo("data")
    raw = bytearray(zip_path.read_bytes())
    start = info.header_offset + 30 + len(b"data")
    raw[start : start + 64] = b"\xff" * 64
    zip_path.write_bytes(bytes(raw))
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'data'")


def test_corrupt_symlink_member(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "pkg.zip", [link("ln", "target-name")], method=zipfile.ZIP_STORED
    )
    _corrupt_member(zip_path, b"target-name")
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'ln'")


def test_not_a_zip(tmp_path: Path) -> None:
    zip_path = tmp_path / "pkg.zip"
    zip_path.write_bytes(b"this is not a zip archive at all")
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, str(zip_path))


def test_missing_zip(tmp_path: Path) -> None:
    zip_path = tmp_path / "absent.zip"
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, str(zip_path))


def test_name_too_long_for_the_filesystem(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("n" * 300)])
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "'" + "n" * 300)


def test_directory_name_too_long_for_the_filesystem(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("d" * 300 + "/x")])
    assert_refused(tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "cannot extract")


def test_missing_manifest(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f("bin/run.sh", SCRIPT)], manifest=False)
    assert_refused(tmp_path, zip_path, ErrorCode.MANIFEST_NOT_FOUND, MANIFEST_NAME)


def test_empty_zip_has_no_manifest(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [], manifest=False)
    assert_refused(tmp_path, zip_path, ErrorCode.MANIFEST_NOT_FOUND, MANIFEST_NAME)


def test_manifest_that_is_a_link_does_not_count(tmp_path: Path) -> None:
    entries = [f("real.json", MANIFEST), link(MANIFEST_NAME, "real.json")]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, manifest=False)
    assert_refused(tmp_path, zip_path, ErrorCode.MANIFEST_NOT_FOUND, MANIFEST_NAME)


def test_root_manifest_path_taken_by_a_directory(tmp_path: Path) -> None:
    entries = [d(MANIFEST_NAME + "/"), f("sub/" + MANIFEST_NAME, MANIFEST)]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, manifest=False)
    error = assert_refused(tmp_path, zip_path, ErrorCode.MANIFEST_NOT_FOUND, MANIFEST_NAME)
    assert "not a regular file" in error.message


def test_unparsable_manifest(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [f(MANIFEST_NAME, b"{nope")], manifest=False)
    assert_refused(tmp_path, zip_path, ErrorCode.MANIFEST_UNPARSABLE, MANIFEST_NAME)


def test_extracts_with_exec_bits_and_safe_modes(tmp_path: Path) -> None:
    entries = [
        d("bin/"),
        f("bin/run.sh", SCRIPT, 0o755),
        f("data/readme.txt", b"text", 0o644),
        f("data/wide-open", b"x", 0o4777),
        f("data/no-perms", b"x", 0),
        f("./dotted//path", b"x"),
    ]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    target = tmp_path / "Pub.Type-1.0"
    manifest = extract_package(zip_path, target)

    assert manifest.command(Operation.ENABLE) == "bin/run.sh enable"

    def mode(rel: str) -> int:
        return stat.S_IMODE((target / rel).stat().st_mode)

    assert mode("bin/run.sh") == 0o755
    assert mode("data/readme.txt") == 0o744
    assert mode("data/wide-open") == 0o755  # no setuid, no group/other write
    assert mode("data/no-perms") == 0o744
    assert mode(MANIFEST_NAME) & 0o700 == 0o700
    assert (target / "dotted" / "path").read_bytes() == b"x"
    for directory in (target, target / "bin", target / "data", target / "dotted"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert (target / "bin" / "run.sh").read_bytes() == SCRIPT
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_archive_without_unix_modes(tmp_path: Path) -> None:
    zip_path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        info = zipfile.ZipInfo(MANIFEST_NAME)
        info.create_system = 0  # MS-DOS: no Unix mode at all
        info.external_attr = 0x20  # just the DOS "archive" attribute
        archive.writestr(info, MANIFEST)
        archive.writestr(zipfile.ZipInfo("lib/"), b"")
    extract_package(zip_path, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / MANIFEST_NAME).stat().st_mode) == 0o744
    assert (tmp_path / "out" / "lib").is_dir()


def test_relative_links_inside_are_created(tmp_path: Path) -> None:
    entries = [
        f("bin/real.sh", SCRIPT),
        link("bin/alias.sh", "real.sh"),
        link("current", "."),
        link("lib/up", ".."),
        link("dangling", "nowhere/file"),
        link("via", "current/bin/real.sh"),
        d("./"),
    ]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    target = tmp_path / "out"
    extract_package(zip_path, target)
    assert os.readlink(target / "bin" / "alias.sh") == "real.sh"
    assert (target / "bin" / "alias.sh").read_bytes() == SCRIPT
    assert (target / "via").read_bytes() == SCRIPT
    assert os.readlink(target / "lib" / "up") == ".."
    assert (target / "dangling").is_symlink()


def test_manifest_found_in_subdir_is_copied_to_root(tmp_path: Path) -> None:
    entries = [
        f("z/" + MANIFEST_NAME, MANIFEST.replace(b'"T"', b'"shallow-z"')),
        f("a/deep/" + MANIFEST_NAME, MANIFEST.replace(b'"T"', b'"deep"')),
        f("b/" + MANIFEST_NAME, MANIFEST.replace(b'"T"', b'"shallow-b"')),
    ]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, manifest=False)
    target = tmp_path / "out"
    manifest = extract_package(zip_path, target)
    assert manifest.name == "shallow-b"
    assert b"shallow-b" in (target / MANIFEST_NAME).read_bytes()
    assert stat.S_IMODE((target / MANIFEST_NAME).stat().st_mode) & 0o100
    assert (target / "z" / MANIFEST_NAME).exists()


def test_root_manifest_wins(tmp_path: Path) -> None:
    entries = [f("a/" + MANIFEST_NAME, MANIFEST.replace(b'"T"', b'"nested"'))]
    zip_path = make_zip(tmp_path / "pkg.zip", entries)
    assert extract_package(zip_path, tmp_path / "out").name == "T"


def test_manifest_with_bom(tmp_path: Path) -> None:
    entries = [f(MANIFEST_NAME, b"\xef\xbb\xbf" + MANIFEST)]
    zip_path = make_zip(tmp_path / "pkg.zip", entries, manifest=False)
    assert extract_package(zip_path, tmp_path / "out").name == "T"


def test_empty_target_directory_is_replaced(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [])
    target = tmp_path / "out"
    target.mkdir()
    extract_package(zip_path, target)
    assert (target / MANIFEST_NAME).is_file()


@pytest.mark.parametrize("kind", ["non-empty-dir", "file", "link"])
def test_existing_target_is_refused(tmp_path: Path, kind: str) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [])
    target = tmp_path / "out"
    if kind == "non-empty-dir":
        target.mkdir()
        (target / "keep").write_text("mine")
    elif kind == "file":
        target.write_text("mine")
    else:
        target.symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    with pytest.raises(PackageError) as caught:
        extract_package(zip_path, target)
    assert caught.value.code == ErrorCode.PACKAGE_EXTRACTION
    assert str(target) in caught.value.message
    assert snapshot(tmp_path) == before


def test_copy_limited_counts_the_bytes_it_really_gets(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert _copy_limited(io.BytesIO(b"12345"), fd, limit=5, name="m") == (5, b"")
        assert _copy_limited(io.BytesIO(b"67"), fd, limit=5, name="m", keep=True) == (2, b"67")
        with pytest.raises(PackageError) as caught:
            _copy_limited(io.BytesIO(b"123456"), fd, limit=5, name="liar")
    finally:
        os.close(fd)
    assert caught.value.code == ErrorCode.PACKAGE_EXTRACTION
    assert "'liar'" in caught.value.message
    assert (tmp_path / "out").read_bytes() == b"1234567"  # none of the liar's bytes


def test_target_under_a_file(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "pkg.zip", [])
    (tmp_path / "afile").write_text("in the way")
    target = tmp_path / "afile" / "out"
    assert_refused(
        tmp_path, zip_path, ErrorCode.PACKAGE_EXTRACTION, "cannot extract", target=target
    )
