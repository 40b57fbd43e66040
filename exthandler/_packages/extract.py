"""Safe extraction of a handler package into its handler directory.

A package is untrusted input. Every member is checked against the archive's central
directory before a single byte is written: no absolute or drive-letter paths, no
backslashes, no `..`, no links that leave the package (following links through other
links, as the kernel would), no devices, fifos or sockets, no duplicates, no writing
through a link, and no zip bombs (entry count, declared total size, compression ratio of
each member and of the whole archive). Sizes are then enforced again on the bytes actually
decompressed. Every directory and file made gets an explicit mode, whatever the umask.

Extraction happens in a hidden sibling of the target and is renamed into place only when
everything, manifest included, is in order: a refused package leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path
from typing import IO

from exthandler_sdk import ErrorCode
from exthandler_sdk.files import fsync_dir

from .._errors import PackageError
from .._values import Value
from .manifest import MANIFEST_NAME, HandlerManifest, parse_manifest

__all__ = ["DEFAULT_LIMITS", "ExtractionLimits", "extract_package"]

_CHUNK = 1 << 20
_MAX_LINK_LENGTH = 4096
# How many link expansions resolving one link may take; beyond it the link is a loop.
_LINK_EXPANSIONS = 64
_DRIVE_RE = re.compile(r"\A[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SUPPORTED_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_SPECIAL_TYPES = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
# What reading a damaged member raises (bad CRC, broken deflate stream, truncation).
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)
_DIR_MODE = 0o755
# Owner gets rwx on every file (the protocol makes every file executable for the owner);
# group/other write and the setuid/setgid/sticky bits are never taken from a package.
_FILE_MODE_MASK = 0o755
_OWNER_RWX = 0o700
_DEFAULT_FILE_PERMS = 0o644


class ExtractionLimits(Value):
    """Bounds that make a zip bomb a refused package instead of a full disk.

    `max_files` counts entries of every kind (files, directories, links). `max_ratio`
    applies to each member larger than `ratio_min_size` (uncompressed), and to the whole
    archive (its total uncompressed size over the zip file's size) when that total is
    larger than `ratio_min_size`: a small package of zeros legitimately compresses very
    well, but many small members must not add up to what one large member may not be.
    Sizes are checked on the central directory first, then on the bytes actually
    decompressed.
    """

    max_total_size: int = 1 << 30
    max_files: int = 10_000
    max_ratio: float = 200.0
    ratio_min_size: int = 1 << 20


DEFAULT_LIMITS = ExtractionLimits()


def _refuse(message: str) -> PackageError:
    return PackageError(ErrorCode.PACKAGE_EXTRACTION, message)


class _Kind(enum.Enum):
    FILE = "file"
    DIR = "directory"
    LINK = "symlink"


class _Member(Value):
    """One archive entry that passed the checks, with its normalised path."""

    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    kind: _Kind
    perms: int
    link_target: str = ""

    @property
    def name(self) -> str:
        return self.info.filename


def extract_package(
    zip_path: Path, target: Path, *, limits: ExtractionLimits = DEFAULT_LIMITS
) -> HandlerManifest:
    """Extract the package `zip_path` into the new directory `target`; return its manifest.

    `target` must not exist, or be an empty directory (which is then replaced, and left as
    it was if the package is refused). Missing parents of `target` are created. Errors are
    PackageError: 1005 for an unsafe, corrupt or oversized package, 1002 when it holds no
    HandlerManifest.json, 1003 when that does not parse. On any error nothing is left at
    `target`, nor anywhere else. Blocking: call it from a worker thread.
    """
    zip_path, target = Path(zip_path), Path(target)
    _check_target(target)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _refuse(f"{zip_path} is not a readable zip archive: {exc}") from exc
    with archive:
        assert archive.fp is not None  # open for reading until the with-block ends
        members = _plan(archive, limits, zip_path, os.fstat(archive.fp.fileno()).st_size)
        manifest_member = _choose_manifest(members, zip_path)
        created: list[Path] = []
        staging: Path | None = None
        done = False
        try:
            _make_dirs(target.parent, created)
            staging = _staging_dir(target)
            data = _write(archive, members, staging, limits, manifest_member)
            manifest = _install_manifest(staging, manifest_member, data)
            staging.chmod(_DIR_MODE)
            os.rename(staging, target)
            done = True
        except OSError as exc:
            raise _refuse(f"cannot extract {zip_path} into {target}: {exc}") from exc
        finally:
            if not done:
                _remove(staging, created)
    with contextlib.suppress(OSError):  # best effort: a crash redoes the extraction
        fsync_dir(target.parent)
    return manifest


def _remove(staging: Path | None, created: list[Path]) -> None:
    """Undo a failed extraction: the staging tree, then the parents made for it."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _staging_dir(target: Path) -> Path:
    """A new empty dir beside `target` (0700 until it is complete) for the extraction to
    fill: a random name, as `tempfile.mkdtemp` makes, without importing it."""
    for _ in range(_STAGING_ATTEMPTS):
        staging = target.with_name(f".{target.name}.{os.urandom(6).hex()}.extracting")
        try:
            os.mkdir(staging, 0o700)
        except FileExistsError:
            continue
        return staging
    raise FileExistsError(errno.EEXIST, "no free name for a staging dir", str(target.parent))


_STAGING_ATTEMPTS = 100


def _check_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise _refuse(f"{target} already exists and is not an empty directory")


def _make_dirs(path: Path, created: list[Path]) -> None:
    """Create `path` and its missing parents, recording each in `created`, outermost first."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=_OWNER_RWX)
        created.append(directory)
        directory.chmod(_DIR_MODE)


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or PackageError if it could escape."""
    if "\\" in name:
        raise _refuse(f"member {name!r}: backslashes are not allowed in package paths")
    if name.startswith("/"):
        raise _refuse(f"member {name!r}: absolute paths are not allowed")
    if _DRIVE_RE.match(name):
        raise _refuse(f"member {name!r}: drive letters are not allowed")
    if _CONTROL_RE.search(name):
        raise _refuse(f"member {name!r}: control characters are not allowed in names")
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            raise _refuse(f"member {name!r}: '..' components are not allowed")
        if part not in ("", "."):
            parts.append(part)
    return tuple(parts)


def _classify(info: zipfile.ZipInfo) -> tuple[_Kind, int]:
    """What an entry is (from its Unix mode, if any) and the permission bits it asks for."""
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        kind = _Kind.LINK
    elif file_type == stat.S_IFDIR or info.filename.endswith("/"):
        kind = _Kind.DIR
    elif file_type in (0, stat.S_IFREG):
        kind = _Kind.FILE
    else:
        what = _SPECIAL_TYPES.get(file_type, f"file of unknown type {file_type:#o}")
        raise _refuse(
            f"member {info.filename!r} is a {what}; only files, directories and links are allowed"
        )
    perms = stat.S_IMODE(mode) & 0o777
    return kind, perms or _DEFAULT_FILE_PERMS


def _plan(
    archive: zipfile.ZipFile, limits: ExtractionLimits, zip_path: Path, size: int
) -> list[_Member]:
    """Check every entry from the central directory; nothing is written here.

    `size` is the zip file's size in bytes: what the whole archive's ratio is taken over
    (a sum of the members' compressed sizes could count shared bytes more than once).
    """
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise _refuse(
            f"package has {len(infos)} entries, over the limit of {limits.max_files}"
            f" (refused at member {infos[limits.max_files].filename!r})"
        )
    members: dict[tuple[str, ...], _Member] = {}
    total = 0
    for info in infos:
        name = info.filename
        parts = _safe_parts(name)
        kind, perms = _classify(info)
        if info.flag_bits & 0x1:
            raise _refuse(f"member {name!r} is encrypted")
        if info.compress_type not in _SUPPORTED_METHODS:
            raise _refuse(
                f"member {name!r} uses unsupported compression method {info.compress_type}"
            )
        total += info.file_size
        if total > limits.max_total_size:
            raise _refuse(
                f"member {name!r} takes the package over the limit of"
                f" {limits.max_total_size} bytes uncompressed ({total} bytes so far)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_min_size and ratio > limits.max_ratio:
            raise _refuse(
                f"member {name!r} expands {info.compress_size} bytes to {info.file_size}"
                f" (more than {limits.max_ratio:g}:1): a zip bomb"
            )
        if not parts:
            if kind is _Kind.DIR:
                continue  # "./" names the package root itself
            raise _refuse(f"member {name!r} does not name a file")
        if parts in members:
            raise _refuse(f"member {name!r} is a duplicate of {members[parts].name!r}")
        link_target = _read_link(archive, info) if kind is _Kind.LINK else ""
        members[parts] = _Member(
            info=info, parts=parts, kind=kind, perms=perms, link_target=link_target
        )
    # Checked after each member's own limits, so that a single culprit is named.
    if total > limits.ratio_min_size and total > limits.max_ratio * max(size, 1):
        raise _refuse(
            f"{zip_path}: its {len(infos)} members expand {size} bytes to {total}"
            f" (more than {limits.max_ratio:g}:1 for the whole archive): a zip bomb"
        )
    for member in members.values():
        for depth in range(1, len(member.parts)):
            ancestor = members.get(member.parts[:depth])
            if ancestor is not None and ancestor.kind is not _Kind.DIR:
                raise _refuse(
                    f"member {member.name!r} lies under {ancestor.name!r}, which is a"
                    f" {ancestor.kind.value}, not a directory"
                )
    links = {parts: m.link_target for parts, m in members.items() if m.kind is _Kind.LINK}
    for parts, link_target in links.items():
        if _resolve(links, parts[:-1], link_target, [_LINK_EXPANSIONS]) is None:
            raise _refuse(
                f"symlink {members[parts].name!r} -> {link_target!r} points outside the"
                " package (or loops)"
            )
    return list(members.values())


def _read_link(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """The target a link entry stores as its content, if it could ever stay inside."""
    name = info.filename
    if info.file_size > _MAX_LINK_LENGTH:
        raise _refuse(f"symlink {name!r} has a {info.file_size}-byte target")
    try:
        target = _read_checked(archive, info).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"symlink {name!r} has a target that is not UTF-8") from exc
    if not target or target.startswith("/") or _DRIVE_RE.match(target) or "\\" in target:
        raise _refuse(f"symlink {name!r} -> {target!r} must be a relative path inside the package")
    if _CONTROL_RE.search(target):
        raise _refuse(f"symlink {name!r} has control characters in its target")
    return target


def _read_checked(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except _CORRUPT as exc:
        raise _refuse(f"member {info.filename!r} is corrupt: {exc}") from exc


def _resolve(
    links: dict[tuple[str, ...], str], start: tuple[str, ...], target: str, budget: list[int]
) -> tuple[str, ...] | None:
    """Where `target`, followed from directory `start`, lands; None if it leaves the root.

    Links met on the way are followed (their `..` applies to where they lead, as in the
    kernel); `budget` bounds the expansions so that loops end as refusals.
    """
    stack = list(start)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        inner = links.get(tuple(stack))
        if inner is not None:
            budget[0] -= 1
            if budget[0] < 0:
                return None
            resolved = _resolve(links, tuple(stack[:-1]), inner, budget)
            if resolved is None:
                return None
            stack = list(resolved)
    return tuple(stack)


def _choose_manifest(members: list[_Member], zip_path: Path) -> _Member:
    """The manifest to use: at the root, else the first found, shallowest first."""
    candidates = sorted(
        (m for m in members if m.kind is _Kind.FILE and m.parts[-1] == MANIFEST_NAME),
        key=lambda m: (len(m.parts), m.parts),
    )
    if not candidates:
        raise PackageError(
            ErrorCode.MANIFEST_NOT_FOUND, f"package {zip_path} holds no {MANIFEST_NAME}"
        )
    chosen = candidates[0]
    if len(chosen.parts) > 1 and any(m.parts == (MANIFEST_NAME,) for m in members):
        raise PackageError(
            ErrorCode.MANIFEST_NOT_FOUND,
            f"package {zip_path}: {MANIFEST_NAME} at its root is not a regular file",
        )
    return chosen


def _write(
    archive: zipfile.ZipFile,
    members: list[_Member],
    root: Path,
    limits: ExtractionLimits,
    keep: _Member,
) -> bytes:
    """Create every member under `root`: directories and files first, links last; return
    the content of the member `keep` (the manifest), read as it is written.

    Paths are strings joined here: `root` is a fresh dir of ours and every name was
    checked by `_plan` (a pathlib object per member would cost more than its syscalls).
    """
    top = os.fspath(root)
    directories: set[tuple[str, ...]] = set()
    budget = limits.max_total_size
    kept = b""
    for member in members:
        ancestors = [member.parts[:depth] for depth in range(1, len(member.parts))]
        if member.kind is _Kind.DIR:
            ancestors.append(member.parts)
        for parts in ancestors:
            if parts not in directories:
                # Private while the tree is built; opened up to _DIR_MODE at the end. The
                # set makes each dir once, in a fresh dir of ours: nothing is in the way.
                os.mkdir(_join(top, parts), _OWNER_RWX)
                directories.add(parts)
        if member.kind is _Kind.FILE:
            limit = min(member.info.file_size, budget)
            written, data = _write_file(archive, member, top, limit, keep=member is keep)
            budget -= written
            if member is keep:
                kept = data
    for member in members:
        if member.kind is _Kind.LINK:
            os.symlink(member.link_target, _join(top, member.parts))
    for parts in directories:
        os.chmod(_join(top, parts), _DIR_MODE)
    return kept


def _join(top: str, parts: tuple[str, ...]) -> str:
    return f"{top}/{'/'.join(parts)}"


def _write_file(
    archive: zipfile.ZipFile, member: _Member, top: str, limit: int, *, keep: bool
) -> tuple[int, bytes]:
    """Stream one member to disk, never writing more than `limit` bytes; return the count
    and, with `keep`, the bytes."""
    path = _join(top, member.parts)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise _refuse(f"member {member.name!r} cannot be created: {exc}") from exc
    try:
        try:
            with archive.open(member.info) as source:
                written, data = _copy_limited(source, fd, limit=limit, name=member.name, keep=keep)
        except _CORRUPT as exc:
            raise _refuse(f"member {member.name!r} is corrupt: {exc}") from exc
        # No fsync per file: a package is extracted again whenever its record does not say
        # it was, and a leftover directory is removed first (see the engine's fetch step).
        os.fchmod(fd, (member.perms & _FILE_MODE_MASK) | _OWNER_RWX)
    finally:
        os.close(fd)
    return written, data


def _copy_limited(
    source: IO[bytes], fd: int, *, limit: int, name: str, keep: bool = False
) -> tuple[int, bytes]:
    """Copy `source` to the file `fd`, refusing as soon as more than `limit` bytes come
    out; return the count and, with `keep`, the bytes.

    Headers can lie about sizes, so the bytes are counted as they are decompressed.
    """
    written = 0
    chunks: list[bytes] = []
    while chunk := source.read(min(_CHUNK, limit - written + 1)):
        written += len(chunk)
        if written > limit:
            raise _refuse(
                f"member {name!r} decompresses to more than {limit} bytes (its declared size"
                " or what is left of the package's size limit); refused"
            )
        view = memoryview(chunk)
        while view:  # a write to a regular file may still stop short (a signal, ENOSPC)
            view = view[os.write(fd, view) :]
        if keep:
            chunks.append(chunk)
    return written, b"".join(chunks)


def _install_manifest(root: Path, member: _Member, data: bytes) -> HandlerManifest:
    """Parse the chosen manifest (`data`, its content) and copy it to the root if it lives
    deeper."""
    manifest = parse_manifest(data, where=member.name)
    if len(member.parts) > 1:
        top = os.fspath(root)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(f"{top}/{MANIFEST_NAME}", flags, 0o600), "wb") as out:
            out.write(data)
            out.flush()
            mode = os.lstat(_join(top, member.parts)).st_mode
            os.fchmod(out.fileno(), stat.S_IMODE(mode))
    return manifest
