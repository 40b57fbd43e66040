"""Target resolution: what a goal state asks of one handler, in the planner's terms.

For each handler the goal state names: the version (by the upgrade policy, over what the
repositories offer and what is installed) and each extension's sequence number (the goal
state's own, or the last one, bumped when the settings changed). No I/O of its own: the
caller hands in the catalog, the record and, for remembered refusals, how to identify a
package file; it reports the failures and log lines this returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exthandler_sdk import ErrorCode

from .._errors import NoEligibleVersionError
from .._model import (
    EncryptedProtectedSettings,
    ExtensionGoal,
    HandlerName,
    PlainProtectedSettings,
    Version,
)
from .._packages.builtin import missing_handler_hint
from .._packages.repository import PackageCatalog, PackageRef
from .._state.recover import RECOVERED
from .._values import Value
from .planner import ExtensionTarget, HandlerRecord, HandlerTarget
from .versions import select_version

__all__ = [
    "Resolution",
    "choose_version",
    "installed_versions",
    "resolve_target",
    "resolve_targets",
    "settings_digest",
]


class Resolution(Value):
    """A handler's target (None when it cannot be had), the extensions that fail and why
    (`(name, code, message)`), and lines for the runtime's log."""

    target: HandlerTarget | None
    failures: tuple[tuple[str, int, str], ...] = ()
    notes: tuple[str, ...] = ()


def resolve_targets(
    extensions: Mapping[HandlerName, Sequence[ExtensionGoal]],
    records: Mapping[HandlerName, HandlerRecord],
    catalog: PackageCatalog,
    *,
    boot_id: str,
    key: bytes,
    token_of: Callable[[PackageRef], str],
    refused: Mapping[str, tuple[int, str]] | None = None,
    blocked: Callable[[HandlerName], bool] | None = None,
) -> tuple[dict[HandlerName, HandlerTarget], Resolution]:
    """Every handler's target: those the goal names (`extensions`, by handler), and a
    removal for each recorded handler it no longer names. A handler without a possible
    target gets none; the second value gathers every failure and note.

    The policy's decisions come as data: `refused` extensions (name -> code, message) fail
    and get no target; a recorded handler the goal no longer names is left in place, not
    removed, when `blocked` says nothing of it may run."""
    targets: dict[HandlerName, HandlerTarget] = {}
    failures: list[tuple[str, int, str]] = []
    notes: list[str] = []
    refused = refused or {}
    for handler, exts in extensions.items():
        failures += [(e.name, *refused[e.name]) for e in exts if e.name in refused]
        exts = [e for e in exts if e.name not in refused]
        if not exts:
            continue
        resolution = resolve_target(
            handler,
            exts,
            records.get(handler),
            catalog,
            boot_id=boot_id,
            key=key,
            token_of=token_of,
        )
        failures += resolution.failures
        notes += resolution.notes
        if resolution.target is not None:
            targets[handler] = resolution.target
    for handler in records:
        if handler not in extensions:
            if blocked is not None and blocked(handler):
                notes.append(f"{handler}: left installed: the policy keeps it from running")
                continue
            targets[handler] = HandlerTarget(handler=handler, version=None, boot_id=boot_id)
    return targets, Resolution(target=None, failures=tuple(failures), notes=tuple(notes))


def resolve_target(
    handler: HandlerName,
    exts: Sequence[ExtensionGoal],
    record: HandlerRecord | None,
    catalog: PackageCatalog,
    *,
    boot_id: str,
    key: bytes,
    token_of: Callable[[PackageRef], str],
) -> Resolution:
    """The target of `handler` for the extensions `exts` the goal state gives it."""
    failures = [
        (e.name, int(ErrorCode.CONFIGURATION), f"invalid settings: {e.settings_error}")
        for e in exts
        if e.settings_error
    ]
    if failures and len(failures) == len(exts):
        return Resolution(target=None, failures=tuple(failures))
    notes: list[str] = []
    first = exts[0]
    problems = catalog.problems_for(handler)
    try:
        # What is installed is available too: re-applying an unchanged goal state needs
        # no repository, and never takes down what runs for want of one.
        installed = installed_versions(record)
        version = choose_version(first, catalog, installed)
        if problems and version in installed:
            notes.append(_staying(handler, version, problems))
    except NoEligibleVersionError as exc:
        if not problems:
            message = str(exc)
            if not installed and not catalog.available(handler):
                message += missing_handler_hint(handler)
            failures += [(e.name, int(ErrorCode.PACKAGE_DOWNLOAD), message) for e in exts]
            return Resolution(target=None, failures=tuple(failures))
        if record is None or record.version is None:
            # The versions on offer are unknown (the reference agent's 1001: the list of
            # versions could not be downloaded), not known to be missing.
            message = f"{exc}; {'; '.join(problems)}"
            failures += [(e.name, int(ErrorCode.MANIFEST_DOWNLOAD), message) for e in exts]
            return Resolution(target=None, failures=tuple(failures))
        # Installed already: it stays at its version until the repository answers.
        version = record.version
        notes.append(_staying(handler, version, problems))
    ext_targets = [_extension_target(e, record, key) for e in exts if not e.settings_error]
    package = ""
    if record is not None and record.failed_package is not None:
        # A refused package is remembered with what identified its bytes: a new package
        # of the same version is tried, an unchanged one is not.
        with contextlib.suppress(NoEligibleVersionError):
            package = token_of(catalog.find(handler, version))
    target = HandlerTarget(
        handler=handler,
        version=version,
        extensions=tuple(ext_targets),
        boot_id=boot_id,
        package=package,
    )
    return Resolution(target=target, failures=tuple(failures), notes=tuple(notes))


def choose_version(
    first: ExtensionGoal, catalog: PackageCatalog, installed: Sequence[Version] = ()
) -> Version:
    """The version the goal state's first extension of a handler asks for, by the upgrade
    policy, among what the catalog offers and what is `installed` (which counts as
    available: re-applying needs no repository). NoEligibleVersionError if none fits."""
    available = catalog.available(first.handler)
    if installed:
        available = sorted({*available, *installed})
    return select_version(
        first.version,
        available,
        auto_upgrade_minor=first.auto_upgrade_minor,
        use_exact_version=first.use_exact_version,
        handler=first.handler,
    )


def _staying(handler: HandlerName, version: Version, problems: Sequence[str]) -> str:
    return (
        f"{handler}: staying at {version}: the package repositories could not all"
        f" be listed ({'; '.join(problems)})"
    )


def _extension_target(
    ext: ExtensionGoal, record: HandlerRecord | None, key: bytes
) -> ExtensionTarget:
    digest = settings_digest(key, ext)
    previous = record.extension(ext.name) if record is not None else None
    if ext.sequence_number is not None:
        sequence = ext.sequence_number
    elif previous is None:
        sequence = 0
    elif previous.settings_digest in (digest, RECOVERED):
        # RECOVERED: a record rebuilt from the handler dir, whose settings are taken as
        # the goal's (see _state/recover.py).
        sequence = previous.sequence_number
    else:
        sequence = previous.sequence_number + 1
    return ExtensionTarget(
        name=ext.name,
        state=ext.state,
        sequence_number=sequence,
        settings_digest=digest,
        force_update_tag=ext.force_update_tag,
    )


def installed_versions(record: HandlerRecord | None) -> list[Version]:
    """The versions whose handler dirs the record says are there."""
    if record is None:
        return []
    versions = [record.version] if record.version is not None else []
    if record.upgrade is not None:  # fetched already: its dir is there
        versions.append(record.upgrade.target)
    return versions


def settings_digest(key: bytes, ext: ExtensionGoal) -> str:
    """A keyed digest of an extension's settings: equal settings, equal digest; no secret leaks."""
    secret: Any = None
    if isinstance(ext.protected_settings, PlainProtectedSettings):
        secret = {"plain": ext.protected_settings.value}
    elif isinstance(ext.protected_settings, EncryptedProtectedSettings):
        secret = {"data": ext.protected_settings.data, "tp": ext.protected_settings.thumbprint}
    canonical = json.dumps(
        {"public": ext.public_settings, "protected": secret}, sort_keys=True, default=str
    )
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:32]
