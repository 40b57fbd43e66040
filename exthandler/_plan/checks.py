"""Checks of a goal state against what its handlers say of themselves (before any change).

A goal state may be well formed and still impossible: two extensions on a handler that
takes one would both read `0.settings`, and only one of them would ever get its settings.
Such a goal state is refused as a whole, by `apply` before anything is changed and by
`validate`, with `path: reason` lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exthandler_sdk.protocol import MANIFEST_NAME

from .._errors import NoEligibleVersionError, PackageError
from .._model import GoalState, GoalStateFormat, HandlerName, RequestedState, Version

# `shared_handlers` is all `validate` needs of this module for most goal states: the
# version choice, the packages and the manifests are imported when a handler is shared.
if TYPE_CHECKING:
    from .._packages.manifest import HandlerManifest
    from .._packages.repository import PackageCatalog

    ManifestLookup = Callable[[HandlerName, Version], HandlerManifest | None]

__all__ = [
    "MANIFEST_PEEK_LIMIT",
    "package_manifest",
    "peek_manifest",
    "shared_handlers",
    "single_config_problems",
]

MANIFEST_PEEK_LIMIT = 64 * 1024
"""The most of a package's HandlerManifest.json read to learn what the handler supports."""


def single_config_problems(
    goal: GoalState,
    catalog: PackageCatalog,
    manifest_of: ManifestLookup,
    installed: Callable[[HandlerName], Sequence[Version]] = lambda _: (),
) -> list[str]:
    """`$.extensions[i]: ...` for every extension that shares a handler which takes one.

    The version is chosen as `apply` would choose it; its manifest comes from
    `manifest_of` (installed handler dirs, in-process classes, package files). When no
    manifest can be had (no repository offers the handler), nothing is said: the fetch
    reports what is missing.
    """
    from .targets import choose_version

    problems: list[str] = []
    for handler, indexes in shared_handlers(goal).items():
        first = goal.extensions[indexes[0]]
        try:
            version = choose_version(first, catalog, installed(handler))
        except NoEligibleVersionError:
            continue
        manifest = manifest_of(handler, version)
        if manifest is None or manifest.supports_multiple_extensions:
            continue
        names = ", ".join(repr(goal.extensions[i].name) for i in indexes)
        for index in indexes[1:]:
            where = (
                f"$.extensions[{index}]"
                if goal.format is GoalStateFormat.NATIVE
                else f"extension {goal.extensions[index].name!r}"
            )
            problems.append(
                f"{where}: {goal.extensions[index].name!r} cannot share handler"
                f" {handler} {version} with {goal.extensions[indexes[0]].name!r}: its"
                f" {MANIFEST_NAME} does not set supportsMultipleExtensions, so the handler"
                f" takes one extension (the goal state gives it {names})"
            )
    return problems


def shared_handlers(goal: GoalState) -> dict[HandlerName, list[int]]:
    """The handlers the goal state gives two extensions or more (not being uninstalled),
    with their positions: the only ones `single_config_problems` has to look at."""
    positions: dict[HandlerName, list[int]] = {}
    for index, ext in enumerate(goal.extensions):
        if ext.state is not RequestedState.UNINSTALL:
            positions.setdefault(ext.handler, []).append(index)
    return {handler: indexes for handler, indexes in positions.items() if len(indexes) > 1}


def peek_manifest(catalog: PackageCatalog, handler: HandlerName, version: Version) -> bytes | None:
    """The HandlerManifest.json a local package file holds (capped), without extracting it.

    The manifest is the one the extractor would install: at the root, else the shallowest.
    None when the package is not a local file or holds no readable manifest: the fetch
    then reports the problem with its own error code.
    """
    import zipfile

    try:
        ref = catalog.find(handler, version)
    except NoEligibleVersionError:
        return None
    if not ref.location.startswith("/"):
        return None
    unreadable = (OSError, zipfile.BadZipFile, EOFError, ValueError)
    with contextlib.suppress(*unreadable), zipfile.ZipFile(Path(ref.location)) as archive:
        names = [
            info
            for info in archive.infolist()
            if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == MANIFEST_NAME
        ]
        if not names:
            return None
        chosen = min(names, key=lambda info: (info.filename.count("/"), info.filename))
        if chosen.file_size > MANIFEST_PEEK_LIMIT:
            return None
        with archive.open(chosen) as stream:
            return stream.read(MANIFEST_PEEK_LIMIT + 1)[:MANIFEST_PEEK_LIMIT]
    return None


def package_manifest(
    catalog: PackageCatalog, handler: HandlerName, version: Version
) -> HandlerManifest | None:
    """`peek_manifest`, parsed; None when it cannot be had or does not parse."""
    from .._packages.manifest import parse_manifest

    data = peek_manifest(catalog, handler, version)
    if data is None:
        return None
    try:
        return parse_manifest(data)
    except PackageError:
        return None
