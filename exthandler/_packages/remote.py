"""Packages from URLs: repositories on HTTP and object stores, and artifact manifests.

- `RemoteRepository` is a directory repository at a URL (`--repo URL`): the same
  `Publisher.Type__Version.zip` names and `.sha256` sidecars, listed where the store can
  list (S3, Azure Blob, GCS, file) and through `index.json` on plain HTTP(S).
- `ManifestSource` offers one handler's versions from its PluginVersionManifest, fetched
  from the goal state's `location`, then each failover location (error 1001 when none
  answers); a package comes from the first of its Uris that works (error 1004 when none
  does). `DisallowMajorVersionUpgrade` needs no handling: a major version is never crossed.
- `goal_catalog` builds a pass's catalog: a handler whose goal names package locations
  gets its versions from its manifest, never from the repositories.

Every package goes through `fetch_package`: the cache first (see `PackageCache`: a
package is never downloaded twice), else a download hashed on the way, checked against
its `.sha256` sidecar when the source has one, kept in the cache, then extracted with
the safe extractor. Messages quote URLs with their credentials redacted.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
from exthandler_sdk import ErrorCode, protocol

from .._errors import PackageError
from .._model import HandlerName, Version
from .._remote import Location, RemoteError, parse_location, redact
from .repository import (
    SIDECAR_SUFFIX,
    Installed,
    PackageCatalog,
    PackageRef,
    PackageSource,
    Workspace,
    install_zip,
    package_file_name,
    parse_package_file_name,
)

if TYPE_CHECKING:
    from .._model import GoalState
    from .artifacts import ManifestPlugin

__all__ = [
    "MANIFEST_LIMIT",
    "PACKAGE_LIMIT",
    "ManifestSource",
    "RemoteRepository",
    "fetch_package",
    "goal_catalog",
]

PACKAGE_LIMIT: Final = 1024 * 1024 * 1024
"""The largest package downloaded (bytes)."""
MANIFEST_LIMIT: Final = 4 * 1024 * 1024
"""The largest artifact manifest read (bytes)."""
_SIDECAR_LIMIT = 4096
_SIGNATURE_LIMIT = 1024 * 1024
_DIGEST = re.compile(r"\A[0-9a-fA-F]{64}\Z")

# Manifests read, by URL: (tag, plugins). A later read of an unchanged manifest is one
# conditional request. Bounded: cleared when it grows past this many entries.
_manifests: dict[str, tuple[str, tuple[ManifestPlugin, ...]]] = {}
_MANIFESTS_KEPT = 256


def _download_error(message: str, *, refused: bool = False) -> PackageError:
    return PackageError(ErrorCode.PACKAGE_DOWNLOAD, message, transient=not refused)


@attrs.frozen
class Candidate:
    """One place a package can be downloaded from, and its sidecar (None: it has none;
    `sidecar_known`: the source listed it, so it is read before the cache is asked)."""

    location: Location
    sidecar: Location | None
    sidecar_known: bool = False


async def _read_sidecar(sidecar: Location, *, required: bool) -> str | None:
    """The hex digest a `.sha256` sidecar holds; None when it is missing and not
    `required`. RemoteError when it cannot be read, ValueError when it is not a digest."""
    from .._remote import Fetched, read

    try:
        fetched = await read(sidecar, limit=_SIDECAR_LIMIT)
    except RemoteError as exc:
        if exc.missing and not required:
            return None
        raise
    assert isinstance(fetched, Fetched)
    tokens = fetched.data.split()
    token = tokens[0].decode("ascii", "replace") if tokens else ""
    if not _DIGEST.match(token):
        raise ValueError(
            f"{sidecar.redacted}: does not start with a sha256 hex digest"
            " (expected `sha256sum` output)"
        )
    return token.lower()


async def fetch_package(
    handler: HandlerName,
    version: Version,
    candidates: Sequence[Candidate],
    workspace: Workspace,
) -> Path:
    """The package `handler` `version` as a zip in the workspace: from the cache, else
    from the first candidate that works (verified against its sidecar). PackageError(1004)
    names every candidate tried and why it failed; `transient` unless every candidate's
    bytes were refused."""
    from .._remote import download

    name = package_file_name(handler, version)
    dest = workspace.path / name
    cache = workspace.cache
    errors: list[str] = []
    refused = 0
    for candidate in candidates:
        expected: str | None = None
        try:
            if candidate.sidecar is not None and candidate.sidecar_known:
                expected = await _read_sidecar(candidate.sidecar, required=True)
        except RemoteError as exc:
            errors.append(exc.message)
            continue
        except ValueError as exc:
            errors.append(str(exc))
            refused += 1
            continue
        if cache is not None:
            cached = await workspace.run_sync(cache.lookup, handler, version, expected)
            if cached is not None:
                try:
                    await workspace.run_sync(cache.copy_to, cached, dest)
                except (OSError, ValueError):
                    dest.unlink(missing_ok=True)
                else:
                    return dest
        try:
            if candidate.sidecar is not None and not candidate.sidecar_known:
                expected = await _read_sidecar(candidate.sidecar, required=False)
        except RemoteError as exc:
            errors.append(exc.message)
            continue
        except ValueError as exc:
            errors.append(str(exc))
            refused += 1
            continue
        part = workspace.path / f".{name}.{secrets.token_hex(4)}.part"
        try:
            result = await download(candidate.location, part, limit=PACKAGE_LIMIT)
        except RemoteError as exc:
            errors.append(exc.message)
            continue
        if expected is not None and result.sha256 != expected:
            part.unlink(missing_ok=True)
            errors.append(
                f"{candidate.location.redacted}: does not match its sidecar"
                f" {SIDECAR_SUFFIX}: expected sha256 {expected}, got {result.sha256}"
            )
            refused += 1
            continue
        try:
            if cache is not None:
                kept = await workspace.run_sync(cache.add, handler, version, part, result.sha256)
                await workspace.run_sync(cache.copy_to, kept, dest)
            else:
                os.replace(part, dest)
        except (OSError, ValueError) as exc:
            part.unlink(missing_ok=True)
            raise _download_error(f"package {name} could not be stored: {exc}") from exc
        return dest
    if not candidates:
        raise _download_error(f"package {name}: no location to download it from")
    raise _download_error(
        f"package {name} could not be downloaded from any of its {len(candidates)}"
        f" location(s): {'; '.join(errors)}",
        refused=refused == len(candidates),
    )


@attrs.define(eq=False)
class RemoteRepository:
    """A repository of `Publisher.Type__Version.zip` packages at a URL (a `PackageSource`).

    A location that does not exist lists as empty, like a directory repository yet to be
    populated; one that cannot be listed raises PackageError(1004), transient.
    """

    url: str
    _names: frozenset[str] = attrs.field(factory=frozenset, init=False)

    def __attrs_post_init__(self) -> None:
        parse_location(self.url)  # ValueError now rather than at the first listing

    def __repr__(self) -> str:
        return f"RemoteRepository({redact(self.url)!r})"

    @property
    def location(self) -> Location:
        return parse_location(self.url)

    async def list_packages(self) -> Sequence[PackageRef]:
        from .._remote import list_names

        location = self.location
        try:
            names = await list_names(location)
        except RemoteError as exc:
            if exc.missing:
                return []
            raise _download_error(f"package repository {exc.message}") from exc
        self._names = frozenset(names)
        refs = []
        for name in names:
            parsed = parse_package_file_name(name)
            if parsed is not None:
                handler, version = parsed
                child = location.child(name)
                refs.append(PackageRef(handler=handler, version=version, location=child.redacted))
        return refs

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        package = self.location.child(ref.file_name)
        listed = ref.file_name + SIDECAR_SUFFIX in self._names
        sidecar = package.with_suffix_name(SIDECAR_SUFFIX) if listed else None
        candidate = Candidate(package, sidecar, sidecar_known=listed)
        zip_path = await fetch_package(ref.handler, ref.version, [candidate], workspace)
        signature: str | None = None
        if ref.file_name + protocol.SIGNATURE_SUFFIX in self._names:
            try:
                signature = await _read_signature(
                    package.with_suffix_name(protocol.SIGNATURE_SUFFIX)
                )
            except PackageError:
                zip_path.unlink(missing_ok=True)
                raise
        return await install_zip(zip_path, directory, workspace, signature=signature)


async def _read_signature(location: Location) -> str:
    """The base64 text of a `.zip.sig` listed beside a package (at most 1 MiB)."""
    from .._remote import Fetched, read

    try:
        fetched = await read(location, limit=_SIGNATURE_LIMIT)
    except RemoteError as exc:
        raise _download_error(f"signature {exc.message}") from exc
    assert isinstance(fetched, Fetched)
    return fetched.data.decode("ascii", "replace")


async def fetch_manifest(
    handler: HandlerName, locations: Sequence[str]
) -> tuple[ManifestPlugin, ...]:
    """The plugins of `handler`'s PluginVersionManifest, from the first location that
    gives a usable one. PackageError(1001), transient, naming every location's problem."""
    from .._remote import NOT_MODIFIED, Fetched, read
    from .artifacts import ManifestError, parse_version_manifest

    errors: list[str] = []
    for text in locations:
        try:
            location = parse_location(text)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        known = _manifests.get(text)
        try:
            fetched = await read(location, etag=known[0] if known else None, limit=MANIFEST_LIMIT)
        except RemoteError as exc:
            errors.append(exc.message)
            continue
        if fetched is NOT_MODIFIED and known is not None:
            return known[1]
        assert isinstance(fetched, Fetched)
        try:
            plugins = parse_version_manifest(fetched.data)
        except ManifestError as exc:
            errors.append(f"{location.redacted}: " + "; ".join(exc.problems))
            continue
        if fetched.tag is not None:
            if len(_manifests) >= _MANIFESTS_KEPT:
                _manifests.clear()
            _manifests[text] = (fetched.tag, plugins)
        return plugins
    raise PackageError(
        ErrorCode.MANIFEST_DOWNLOAD,
        f"{handler}: the artifact manifest could not be had from any of its"
        f" {len(locations)} location(s): {'; '.join(errors)}",
        transient=True,
    )


@attrs.define(eq=False)
class ManifestSource:
    """One handler's packages, as its PluginVersionManifest lists them (a `PackageSource`)."""

    handler: HandlerName
    locations: tuple[str, ...]
    _plugins: dict[Version, ManifestPlugin] = attrs.field(factory=dict, init=False)

    def __repr__(self) -> str:
        return f"ManifestSource({self.handler}, {[redact(t) for t in self.locations]!r})"

    async def list_packages(self) -> Sequence[PackageRef]:
        plugins = await fetch_manifest(self.handler, self.locations)
        self._plugins = {}
        for plugin in plugins:
            self._plugins.setdefault(plugin.version, plugin)
        return [
            PackageRef(handler=self.handler, version=p.version, location=redact(p.uris[0]))
            for p in self._plugins.values()
        ]

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        plugin = self._plugins.get(ref.version)
        if plugin is None:
            await self.list_packages()
            plugin = self._plugins.get(ref.version)
        if plugin is None:
            raise _download_error(f"{ref.file_name}: no longer in the artifact manifest")
        candidates = []
        for uri in plugin.uris:
            try:
                location = parse_location(uri)
            except ValueError:
                continue
            sidecar = location.with_suffix_name(SIDECAR_SUFFIX) if location.name else None
            candidates.append(Candidate(location, sidecar))
        zip_path = await fetch_package(ref.handler, ref.version, candidates, workspace)
        return await install_zip(zip_path, directory, workspace)


async def goal_catalog(goal: GoalState, sources: Sequence[PackageSource]) -> PackageCatalog:
    """The catalog of one pass over `goal`: each handler whose extensions name package
    locations offers what its manifest lists (a manifest that cannot be had is a problem
    of that handler alone); every other handler, what `sources` offer (a source that
    cannot be listed is a problem of all of them, as in `RepositorySet.catalog`)."""
    from .._model import RequestedState

    located: dict[str, ManifestSource] = {}
    for ext in goal.extensions:
        if ext.state is RequestedState.UNINSTALL:
            continue  # being removed: no package needed
        if ext.package_locations and ext.handler.key not in located:
            located[ext.handler.key] = ManifestSource(ext.handler, ext.package_locations)
    listings: list[tuple[PackageSource | None, Sequence[PackageRef]]] = []
    problems: list[str] = []
    for source in sources:
        try:
            refs = await source.list_packages()
        except PackageError as exc:
            problems.append(exc.message)
            continue
        listings.append((source, [r for r in refs if r.handler.key not in located]))
    handler_problems: dict[str, tuple[str, ...]] = {}
    for key, manifest in located.items():
        try:
            listings.append((manifest, await manifest.list_packages()))
        except PackageError as exc:
            handler_problems[key] = (exc.message,)
    return PackageCatalog.from_sources(listings, problems, handler_problems=handler_problems)
