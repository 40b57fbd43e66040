"""The package cache: downloaded packages kept in the state dir, so that none is fetched
twice.

Layout, under `<state-dir>/.exthandler/packages/` (mode 0700):

- `objects/<sha256>.zip`: each package's bytes, named by their digest (content-addressed:
  the same bytes from two URLs are kept once, and a file is checked against its name
  before use);
- `names/Publisher.Type__Version.zip`: the digest of the package that name stands for.

The cache is bounded: after a package is added, while the objects take more than `limit`
bytes, the packages of versions no longer installed (no handler dir
`Publisher.Type-Version/` in the state dir) are removed, least recently used first. The
packages of installed versions are always kept: they are what a reinstall would need.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

from .._model import HandlerName, Version
from .._values import Value
from .repository import package_file_name, parse_package_file_name

__all__ = ["DEFAULT_CACHE_LIMIT", "PackageCache"]

DEFAULT_CACHE_LIMIT = 2 * 1024 * 1024 * 1024
"""The most the cache keeps of packages of versions no longer installed (bytes)."""

_DIGEST = re.compile(r"\A[0-9a-f]{64}\Z")
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class PackageCache(Value):
    """Downloaded packages of one state dir (see the module doc). Blocking file work: call
    it from a worker thread for large packages."""

    root: Path
    state_root: Path
    limit: int = DEFAULT_CACHE_LIMIT

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def names(self) -> Path:
        return self.root / "names"

    def _ensure(self) -> None:
        for directory in (self.root, self.objects, self.names):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, 0o700)

    def digest_of(self, handler: HandlerName, version: Version) -> str | None:
        """The digest the cache holds for the package `handler` `version`, if any."""
        try:
            with open(self.names / package_file_name(handler, version), "rb") as stream:
                text = stream.read(128).decode("ascii", "replace").strip()
        except OSError:
            return None
        return text if _DIGEST.match(text) else None

    def lookup(
        self, handler: HandlerName, version: Version, digest: str | None = None
    ) -> Path | None:
        """The cached package file for `handler` `version` (whose bytes must have
        `digest` when one is given), or None. Its use time is updated."""
        known = self.digest_of(handler, version)
        if known is None or (digest is not None and known != digest):
            return None
        path = self.objects / f"{known}.zip"
        try:
            os.utime(path)
        except OSError:
            return None
        return path

    def add(self, handler: HandlerName, version: Version, part: Path, digest: str) -> Path:
        """Move the verified download `part` (whose sha256 is `digest`) into the cache as
        `handler` `version`; the cached file's path. Then evict what exceeds the limit."""
        self._ensure()
        path = self.objects / f"{digest}.zip"
        os.replace(part, path)
        os.chmod(path, 0o600)
        name = self.names / package_file_name(handler, version)
        temp = name.with_name(f".{name.name}.{secrets.token_hex(4)}.tmp")
        temp.write_bytes(f"{digest}\n".encode())
        os.replace(temp, name)
        self.evict(keep=path)
        return path

    def copy_to(self, cached: Path, dest: Path) -> str:
        """Put the cached package `cached` at `dest` (a hard link when possible, else a
        copy) and return the digest of the bytes at `dest`, which must match its name:
        a cached file altered on disk is removed and reported with ValueError."""
        try:
            os.link(cached, dest)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(cached, dest)
        digest = file_digest(dest)
        if digest != cached.stem:
            dest.unlink(missing_ok=True)
            cached.unlink(missing_ok=True)
            raise ValueError(f"{cached}: cached package altered on disk; removed")
        return digest

    def _installed(self, name: str) -> bool:
        parsed = parse_package_file_name(name)
        if parsed is None:
            return False
        handler, version = parsed
        return os.path.isdir(self.state_root / f"{handler}-{version}")

    def evict(self, *, keep: Path | None = None) -> list[str]:
        """Remove packages of versions no longer installed, least recently used first,
        while the cache holds more than `limit` bytes; the names removed."""
        try:
            names = {entry.name: entry.path for entry in os.scandir(self.names) if entry.is_file()}
            objects = {
                entry.name: entry.stat() for entry in os.scandir(self.objects) if entry.is_file()
            }
        except FileNotFoundError:
            return []
        for name in [n for n in objects if n.endswith((".part", ".tmp"))]:
            with contextlib.suppress(OSError):
                os.unlink(self.objects / name)
            del objects[name]
        total = sum(info.st_size for info in objects.values())
        if total <= self.limit:
            return []
        referenced: dict[str, list[str]] = {}
        for name in names:
            parsed = parse_package_file_name(name)
            digest = self.digest_of(*parsed) if parsed else None
            if digest is not None:
                referenced.setdefault(f"{digest}.zip", []).append(name)
        kept = {
            obj for obj, users in referenced.items() if any(self._installed(user) for user in users)
        }
        if keep is not None:
            kept.add(keep.name)
        candidates = sorted(
            (info.st_mtime_ns, obj) for obj, info in objects.items() if obj not in kept
        )
        removed: list[str] = []
        for _, obj in candidates:
            if total <= self.limit:
                break
            total -= objects[obj].st_size
            with contextlib.suppress(OSError):
                os.unlink(self.objects / obj)
            for user in referenced.get(obj, ()):
                with contextlib.suppress(OSError):
                    os.unlink(self.names / user)
                removed.append(user)
        return removed
