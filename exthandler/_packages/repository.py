"""Package repositories: where handler packages (zips) come from.

A repository offers `Publisher.Type__Version.zip` packages. `PackageSource` is the small
async interface every kind of source implements: list what it offers, install one into a
handler dir (a local directory of zips, the runtime's in-process handler classes, or an
embedder's own); `RepositorySet` combines several, the first one listed winning on
duplicates. A directory repository copies a package into the runtime's workspace and
verifies its optional `.sha256` sidecar on the bytes actually copied, so what is
extracted is what was checked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    BinaryIO,
    Protocol,
    TypeVar,
    TypeVarTuple,
    Unpack,
    runtime_checkable,
)

import anyio
import anyio.to_thread
from exthandler_sdk import ErrorCode, protocol

from .._errors import NoEligibleVersionError, PackageError, VersionError
from .._fs import INLINE_LIMIT
from .._model import HandlerName, Version
from .._values import Value, field
from .builtin import missing_handler_hint
from .extract import extract_package
from .manifest import HandlerManifest

if TYPE_CHECKING:
    from hashlib import _Hash

    from .cache import PackageCache

__all__ = [
    "SIDECAR_SUFFIX",
    "DirectoryRepository",
    "Installed",
    "PackageCatalog",
    "PackageRef",
    "PackageSource",
    "RepositorySet",
    "Workspace",
    "install_zip",
    "package_file_name",
    "parse_package_file_name",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20
# A sidecar holds a digest and perhaps a file name; anything longer is not a sidecar.
_SIDECAR_MAX_BYTES = 4096
_SIGNATURE_MAX_BYTES = 1 << 20
_DIGEST_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")


class PackageRef(Value):
    """One package a source offers: which handler, which version, and where it lives.

    `location` is source-specific (a file path for a directory repository, a URL for an
    HTTP one) and is meant for messages and for the source that listed it.
    """

    handler: HandlerName
    version: Version
    location: str

    @property
    def file_name(self) -> str:
        """The package's canonical file name, `Publisher.Type__Version.zip`."""
        return package_file_name(self.handler, self.version)


class Workspace(Value, kw_only=False):
    """What the runtime lends a source while it installs a package: a private scratch dir
    (`path`, mode 0700, emptied by nobody but the source), the runtime's I/O threads, and
    the state dir's cache of downloaded packages (`cache`; None: downloads are not kept).

    `check` is the runtime's verification of a package zip (its signature, see
    docs/policy.md), which `install_zip` runs before extracting anything; None: none.
    """

    path: Path
    limiter: anyio.CapacityLimiter
    check: Callable[[Path, str | None], Awaitable[None]] | None = None
    cache: PackageCache | None = None

    def __init__(
        self,
        path: Path,
        limiter: anyio.CapacityLimiter | None = None,
        *,
        check: Callable[[Path, str | None], Awaitable[None]] | None = None,
        cache: PackageCache | None = None,
    ) -> None:
        self.__value_init__(
            path=path,
            limiter=anyio.CapacityLimiter(4) if limiter is None else limiter,
            check=check,
            cache=cache,
        )

    async def run_sync(self, func: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """Run blocking file work (a copy, an extraction) in one of the runtime's I/O threads."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)


class Installed(Value):
    """What a source installed into a handler dir: the dir's manifest, and whether the dir
    can be laid out again at no cost and with the same result after a crash (a dir derived
    from code, not from a download), which spares the runtime a durable record of it."""

    manifest: HandlerManifest
    rebuildable: bool = False


@runtime_checkable
class PackageSource(Protocol):
    """Anything that can list handler packages and install one of them into a handler dir.

    A source of zip packages implements `install` by getting the zip into the workspace
    and calling `install_zip`; see `DirectoryRepository`.
    """

    async def list_packages(self) -> Sequence[PackageRef]:
        """Every package this source offers."""
        ...

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        """Lay out the package `ref` in `directory` (which does not exist yet), verified.

        Raises PackageError when the package cannot be had (1004, `transient` unless its
        bytes were refused) or is unusable (its code says why); whatever it left of
        `directory` is then removed by the runtime.
        """
        ...


async def install_zip(
    zip_path: Path, directory: Path, workspace: Workspace, *, signature: str | None = None
) -> Installed:
    """Extract the package zip at `zip_path` into `directory` safely (see `extract_package`)
    and remove the zip; small packages are extracted at once, large ones in a thread.

    The workspace's `check` runs first, on the zip where it lies; `signature` is the
    package's signature the source found beside it (`Publisher.Type__Version.zip.sig`,
    base64), used when the goal state gives none.
    """
    if workspace.check is not None:
        try:
            await workspace.check(zip_path, signature)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(zip_path)
            raise
    # A stat and an unlink (usually of a hard link into the repository): one syscall each.
    if os.stat(zip_path).st_size <= INLINE_LIMIT:
        manifest = extract_package(zip_path, directory)
    else:
        manifest = await workspace.run_sync(extract_package, zip_path, directory)
    os.unlink(zip_path)
    return Installed(manifest=manifest)


def package_file_name(handler: HandlerName, version: Version) -> str:
    """`Publisher.Type__Version.zip`, the name the reference agent gives packages."""
    return protocol.package_file_name(str(handler), str(version))


def parse_package_file_name(name: str) -> tuple[HandlerName, Version] | None:
    """The handler and version a package file name stands for, or None if it is not one."""
    parts = protocol.split_package_file_name(name)
    if parts is None:
        return None
    try:
        return HandlerName.parse(parts[0]), Version.parse(parts[1])
    except (ValueError, VersionError):
        return None


def _download_error(message: str, *, refused: bool = False) -> PackageError:
    """1004. A download that did not go through is tried again at the next pass; one whose
    bytes were `refused` (a digest that does not match) is not, until the package changes."""
    return PackageError(ErrorCode.PACKAGE_DOWNLOAD, message, transient=not refused)


def package_token(ref: PackageRef) -> str:
    """What tells one package file at `ref` from another of the same name: the size, the
    change time and the inode of the package and its sidecars, for a local file; "" when
    the location is not a local file (the refusal then stands until the goal changes)."""
    if not ref.location.startswith("/"):
        return ""
    parts = []
    for path in (
        ref.location,
        ref.location + SIDECAR_SUFFIX,
        ref.location + protocol.SIGNATURE_SUFFIX,
    ):
        try:
            info = os.stat(path)
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}")
    return "/".join(parts)


class DirectoryRepository(Value):
    """A local directory of `Publisher.Type__Version.zip` packages (a `PackageSource`).

    Files that are not named exactly so are ignored, as are sidecars and subdirectories.
    A directory that does not exist lists as empty (a configured repository may not have
    been populated yet); fetching from it raises PackageError(1004). A path that exists but
    cannot be listed (not a directory, no permission) raises PackageError(1004) from both.
    Within one directory, names that spell the same package differently (`X__1.0.zip`
    and `x__1.0.0.zip`) are all listed, sorted by file name; `RepositorySet` keeps the
    first.
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        self.__value_init__(path=Path(path))

    async def list_packages(self) -> Sequence[PackageRef]:
        return await anyio.to_thread.run_sync(self._list_sync)

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        zip_path = await self.fetch(ref, workspace.path / ref.file_name)
        try:
            signature = _read_signature(self.path / (ref.file_name + protocol.SIGNATURE_SUFFIX))
        except PackageError:
            zip_path.unlink(missing_ok=True)
            raise
        return await install_zip(zip_path, directory, workspace, signature=signature)

    async def fetch(self, ref: PackageRef, dest: Path) -> Path:
        """Copy (or link) the package `ref` to the file `dest`, verified against its
        sidecar, and return `dest`; PackageError(1004) leaves `dest` untouched."""
        try:
            small = (self.path / ref.file_name).stat().st_size <= INLINE_LIMIT
        except OSError:
            small = False  # _fetch_sync says what is wrong
        if small:
            return self._fetch_sync(ref, Path(dest))
        return await anyio.to_thread.run_sync(self._fetch_sync, ref, Path(dest))

    def _list_sync(self) -> list[PackageRef]:
        base = self.path.absolute()
        try:
            # scandir knows each entry's type without a stat (on most file systems).
            with os.scandir(base) as entries:
                files = sorted(entry.name for entry in entries if entry.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _download_error(
                f"package repository {self.path} cannot be listed: {exc.strerror or exc}"
            ) from exc
        refs: list[PackageRef] = []
        for name in files:
            parsed = parse_package_file_name(name)
            if parsed is None:
                continue
            handler, version = parsed
            refs.append(PackageRef(handler=handler, version=version, location=f"{base}/{name}"))
        return refs

    def _fetch_sync(self, ref: PackageRef, dest: Path) -> Path:
        if not self.path.is_dir():
            raise _download_error(
                f"package repository {self.path} does not exist or is not a directory"
                f" (looking for {ref.file_name})"
            )
        # The file name is derived from the ref rather than trusted from its location,
        # so a ref can never make this source read outside its directory.
        source = self.path / ref.file_name
        if not source.is_file():
            raise _download_error(f"package {ref.file_name} is not in repository {self.path}")
        expected = _read_sidecar(source.with_name(source.name + SIDECAR_SUFFIX))
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.part")
        try:
            if _link(source, part):
                # The same file under a second name: nothing to copy. The digest is taken
                # of the very file that will be extracted.
                with part.open("rb") as src:
                    digest = _digest_of(src)
            else:
                with part.open("xb") as out, source.open("rb") as src:
                    digest = _digest_of(src, out)
                # No fsync: the copy only lives until it is extracted, which a crash redoes.
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise _download_error(
                    f"package {source} does not match its sidecar {source.name}{SIDECAR_SUFFIX}:"
                    f" expected sha256 {expected}, got {actual}",
                    refused=True,
                )
            os.replace(part, dest)
        except OSError as exc:
            raise _download_error(f"package {source} could not be copied to {dest}: {exc}") from exc
        finally:
            # After a successful replace the part file is gone and this does nothing.
            part.unlink(missing_ok=True)
        return dest


def _link(source: Path, part: Path) -> bool:
    """Hard-link `source` to `part`; False when this file system or its policy refuses, or
    when someone else could change the file after its digest is checked (a link shares
    the file; only a copy of somebody else's file is safe to verify, then extract)."""
    try:
        info = source.stat()
    except OSError:
        return False
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return False
    try:
        os.link(source, part)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP):
            return False
        raise
    return True


def _digest_of(src: BinaryIO, out: BinaryIO | None = None) -> _Hash:
    """The sha256 of what `src` holds, copying it to `out` on the way if given."""
    digest = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    return digest


def _read_signature(path: Path) -> str | None:
    """The base64 text of a `.zip.sig` beside a package; None when there is none."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(_SIGNATURE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _download_error(f"signature {path} cannot be read: {exc}") from exc
    if len(raw) > _SIGNATURE_MAX_BYTES:
        raise _download_error(f"signature {path} is larger than 1 MiB", refused=True)
    return raw.decode("ascii", "replace")


def _read_sidecar(sidecar: Path) -> str | None:
    """The lower-case hex digest a `.sha256` sidecar holds; None when there is none."""
    try:
        with sidecar.open("rb") as stream:
            raw = stream.read(_SIDECAR_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _download_error(f"sidecar {sidecar} cannot be read: {exc}") from exc
    tokens = raw.split()
    token = tokens[0].decode("ascii", "replace") if tokens else ""
    if len(raw) > _SIDECAR_MAX_BYTES or not _DIGEST_RE.match(token):
        raise _download_error(
            f"sidecar {sidecar} does not start with a sha256 hex digest"
            " (expected `sha256sum` output)",
            refused=True,
        )
    return token.lower()


class PackageCatalog(Value):
    """A snapshot of what a set of sources offers: one ref per (handler, version).

    Pure and synchronous, so that one goal state is planned against one consistent view.
    It remembers which source offered each ref, so fetching needs no second listing.
    """

    refs: tuple[PackageRef, ...] = ()
    # Sources that could not be listed, each as "what: why" (see RepositorySet.catalog).
    problems: tuple[str, ...] = ()
    # Problems of one handler's own source (its artifact manifest), by handler key.
    handler_problems: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _by_handler: dict[str, list[PackageRef]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _sources: dict[tuple[str, Version], PackageSource] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_sources(
        cls,
        listings: Iterable[tuple[PackageSource | None, Sequence[PackageRef]]],
        problems: Sequence[str] = (),
        *,
        handler_problems: Mapping[str, tuple[str, ...]] | None = None,
    ) -> PackageCatalog:
        """Merge listings in precedence order (the first ref for a package wins),
        remembering the source of each listing (None: a listing without a source)."""
        chosen: dict[tuple[str, Version], PackageRef] = {}
        sources: dict[tuple[str, Version], PackageSource] = {}
        for source, listing in listings:
            for ref in listing:
                key = (ref.handler.key, ref.version)
                if key not in chosen:
                    chosen[key] = ref
                    if source is not None:
                        sources[key] = source
        ordered = sorted(chosen.values(), key=lambda r: (r.handler.key, r.version))
        by_handler: dict[str, list[PackageRef]] = {}
        for ref in ordered:
            by_handler.setdefault(ref.handler.key, []).append(ref)
        return cls(
            refs=tuple(ordered),
            problems=tuple(problems),
            handler_problems=dict(handler_problems or {}),
            _by_handler=by_handler,
            _sources=sources,
        )

    def problems_for(self, handler: HandlerName) -> tuple[str, ...]:
        """Why what is offered for `handler` may be incomplete: the sources that could not
        be listed, and the problem of its own artifact manifest."""
        return self.problems + tuple(self.handler_problems.get(handler.key, ()))

    def available(self, handler: HandlerName) -> list[Version]:
        """The versions offered for `handler`, lowest first."""
        return [ref.version for ref in self._by_handler.get(handler.key, ())]

    def source_of(self, ref: PackageRef) -> PackageSource | None:
        """The source that listed `ref`, when the catalog was built with sources."""
        return self._sources.get((ref.handler.key, ref.version))

    def find(self, handler: HandlerName, version: Version) -> PackageRef:
        """The package for exactly `handler` at `version` (missing parts count as 0)."""
        for ref in self._by_handler.get(handler.key, ()):
            if ref.version == version:
                return ref
        offered = ", ".join(str(v) for v in self.available(handler))
        hint = "" if offered else missing_handler_hint(handler)
        raise NoEligibleVersionError(
            f"{handler} {version} is not in any package repository"
            f" (available: {offered or 'none'}){hint}"
        )


class RepositorySet(Value):
    """Several sources seen as one; on duplicates the source listed first wins.

    It is itself a `PackageSource`: `install` asks the source that offers the ref.
    Every query lists the sources afresh; `catalog()` takes one snapshot for many queries.
    """

    sources: tuple[PackageSource, ...]

    def __init__(self, sources: Iterable[PackageSource]) -> None:
        self.__value_init__(sources=tuple(sources))

    async def catalog(self, *, skip_unlistable: bool = False) -> PackageCatalog:
        """A snapshot of every package the sources offer.

        A source that cannot be listed raises its PackageError, unless `skip_unlistable`:
        then the snapshot holds what the other sources offer, and the failure is kept in
        `problems` (one source that is down must not stop the handlers of the others).
        """
        listings: list[tuple[PackageSource | None, Sequence[PackageRef]]] = []
        problems: list[str] = []
        for source in self.sources:
            try:
                listings.append((source, await source.list_packages()))
            except PackageError as exc:
                if not skip_unlistable:
                    raise
                problems.append(exc.message)
        return PackageCatalog.from_sources(listings, problems)

    async def list_packages(self) -> Sequence[PackageRef]:
        return await self.list_all()

    async def list_all(self) -> list[PackageRef]:
        """Every package, sorted by handler (case-insensitively) then version."""
        return list((await self.catalog()).refs)

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        for source in self.sources:
            if ref in await source.list_packages():
                return await source.install(ref, directory, workspace)
        raise _download_error(
            f"package {ref.file_name} ({ref.location}) is offered by none of the repositories"
        )
