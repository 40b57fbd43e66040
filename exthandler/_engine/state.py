"""What the engine's parts share: the handler dirs' manifests, and the state of one pass.

`Manifests` outlives passes (a handler dir's manifest changes only when the dir is laid out
again); a `Pass` is made by each `Engine.apply` and dropped at its end, so that nothing of
one goal state leaks into the next.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from .._errors import PackageError
from .._fs import read_regular, write_atomic
from .._model import ExtensionGoal, GoalState, HandlerName, Version
from .._packages.manifest import MANIFEST_NAME, HandlerManifest, read_manifest
from .._packages.repository import PackageCatalog, PackageRef, package_token
from .._plan.planner import HandlerRecord, HandlerTarget
from .._policy.policy import PolicyState
from .._state.statedir import OWN_FILE_LIMIT
from .._state.store import Store
from .._values import Value

__all__ = ["ManifestFacts", "Manifests", "Pass"]


class ManifestFacts(Value, kw_only=False):
    """What a pass over a handler that runs no step needs of its manifest: which status
    file to read, whether to read a heartbeat, and how an update would go."""

    multi: bool
    heartbeat: bool
    update_with_install: bool
    continue_on_update_failure: bool

    def as_row(self) -> list[bool]:
        """The facts in field order, as the cache file keeps them."""
        return [
            self.multi,
            self.heartbeat,
            self.update_with_install,
            self.continue_on_update_failure,
        ]

    @classmethod
    def of(cls, manifest: HandlerManifest) -> ManifestFacts:
        return cls(
            multi=manifest.supports_multiple_extensions,
            heartbeat=manifest.report_heartbeat,
            update_with_install=manifest.update_with_install,
            continue_on_update_failure=manifest.continue_on_update_failure,
        )


# A manifest file as a stat saw it: inode, size, mtime and ctime (ns). Replacing the file
# changes the inode, writing to it the size or times, and nobody can set the ctime back.
_Stamp = tuple[int, int, int, int]
# The facts cache's file in the state dir's meta dir, and its format's number.
FACTS_FILE = "manifest-facts.json"
_FACTS_FORMAT = 1


class Manifests:
    """The manifests of the handler dirs, read once each, and why some could not be.

    `facts` serves a handler's `ManifestFacts` from a cache in the state dir (see
    `FACTS_FILE`) while a stat of its manifest shows the very file they were read from,
    so that a pass over handlers that run no step reads none of their manifests. The
    cache is only a cache: a lost or damaged one is read again from the manifests, so it
    is written without fsync, and only when what it holds changed (`save`).
    """

    store: Store
    _found: dict[tuple[HandlerName, Version], HandlerManifest]
    # Why a handler dir's manifest could not be read (1002 missing, 1003 unparsable).
    _errors: dict[tuple[HandlerName, Version], PackageError]
    # The facts cache as read (handler dir name -> stamp, facts); None until first needed.
    _cached: dict[str, tuple[_Stamp, ManifestFacts]] | None
    # The entries this runtime confirmed or learned; written back by `save` if they differ.
    _used: dict[str, tuple[_Stamp, ManifestFacts]]
    _dirty: bool

    def __init__(self, store: Store) -> None:
        self.store = store
        self._found = {}
        self._errors = {}
        self._cached = None
        self._used = {}
        self._dirty = False

    def facts(self, handler: HandlerName, version: Version) -> ManifestFacts | None:
        """The facts of the manifest of that handler dir; None when it cannot be read
        (`error` says why)."""
        directory = self.store.handler_dir(handler, version)
        name = directory.name
        known = self._used.get(name)
        if known is not None:  # stamped by this runtime: read once each, as `get` reads
            return known[1]
        manifest = self._found.get((handler, version))
        stamp = _stamp(f"{directory}/{MANIFEST_NAME}")  # before any read: a change shows
        if manifest is None:
            cached = self._cache().get(name)
            if stamp is not None and cached is not None and cached[0] == stamp:
                self._used[name] = cached
                return cached[1]
            manifest = self.get(handler, version)  # a link or a FIFO: refused there
            if manifest is None:
                return None
        found = ManifestFacts.of(manifest)
        if stamp is not None:
            self._used[name] = (stamp, found)
            self._dirty = True
        return found

    def _cache(self) -> dict[str, tuple[_Stamp, ManifestFacts]]:
        if self._cached is None:
            self._cached = _read_facts(self.store.meta / FACTS_FILE)
        return self._cached

    def save(self) -> None:
        """Write the facts cache when it no longer holds what this runtime found: new
        facts, or entries of handler dirs no pass asked for (removed ones) to drop."""
        if not self._dirty and (self._cached is None or len(self._used) == len(self._cached)):
            return
        document = {
            "format": _FACTS_FORMAT,
            "dirs": {
                name: [*stamp, *facts.as_row()]
                for name, (stamp, facts) in sorted(self._used.items())
            },
        }
        path = self.store.meta / FACTS_FILE
        write_atomic(path, json.dumps(document).encode(), mode=0o600, durable=False)
        self._cached = dict(self._used)
        self._dirty = False

    def get(self, handler: HandlerName, version: Version) -> HandlerManifest | None:
        key = (handler, version)
        manifest = self._found.get(key)
        if manifest is None:
            path = f"{self.store.handler_dir(handler, version)}/{MANIFEST_NAME}"
            try:
                manifest = read_manifest(path)  # no link, FIFO or huge file: see _fs
            except PackageError as exc:
                self._errors[key] = exc
                return None
            self._found[key] = manifest
            self._errors.pop(key, None)
        return manifest

    def error(self, handler: HandlerName, version: Version) -> PackageError | None:
        """Why the manifest of that dir could not be read, when it could not."""
        return self._errors.get((handler, version))

    def remember(self, handler: HandlerName, version: Version, manifest: HandlerManifest) -> None:
        self._found[(handler, version)] = manifest

    def forget(self, handler: HandlerName, version: Version) -> None:
        """The dir is being removed or laid out again: read its manifest afresh next time."""
        self._found.pop((handler, version), None)
        self._errors.pop((handler, version), None)
        name = self.store.handler_dir(handler, version).name
        if self._used.pop(name, None) is not None:
            self._dirty = True

    def is_multi(self, handler: HandlerName, version: Version) -> bool:
        facts = self.facts(handler, version)
        return facts is not None and facts.multi


def _stamp(path: Any) -> _Stamp | None:
    """The stamp of the regular file at `path` (links not followed); None if it is not one."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_facts(path: Any) -> dict[str, tuple[_Stamp, ManifestFacts]]:
    """The facts cache at `path`; empty when there is none or it is not one."""
    try:
        document = json.loads(read_regular(path, OWN_FILE_LIMIT))
        if document.get("format") != _FACTS_FORMAT:
            return {}
        found: dict[str, tuple[_Stamp, ManifestFacts]] = {}
        for name, entry in document["dirs"].items():
            ino, size, mtime, ctime, multi, beat, with_install, go_on = entry
            numbers = (ino, size, mtime, ctime)
            flags = (multi, beat, with_install, go_on)
            if not all(type(n) is int for n in numbers) or not all(type(f) is bool for f in flags):
                return {}
            found[str(name)] = (numbers, ManifestFacts(*flags))
        return found
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


class Pass:
    """One apply's working state: its goal, catalog, targets and what it wrote.

    `records` is the engine's dict of handler records (kept across passes, for
    `refresh`); every part reads and updates that one dict, on the event loop.
    """

    goal: GoalState
    records: dict[HandlerName, HandlerRecord]
    catalog: PackageCatalog
    boot_id: str
    # What every command of this pass starts from (see `base_environment`).
    base_env: Mapping[str, str]
    targets: dict[HandlerName, HandlerTarget]
    # The goal's extensions by handler, in the goal's order.
    by_handler: dict[HandlerName, list[ExtensionGoal]]
    # Settings files written in this pass: (path, sequence number).
    written: set[tuple[str, int]]
    # The policy this pass runs under (processing on or off, the policy file's rules).
    policy: PolicyState
    # Whether the pass changed anything: a step ran, or a record was repaired or saved.
    changed: bool

    def __init__(
        self,
        goal: GoalState,
        records: dict[HandlerName, HandlerRecord],
        catalog: PackageCatalog,
        boot_id: str,
        base_env: Mapping[str, str],
    ) -> None:
        self.goal = goal
        self.records = records
        self.catalog = catalog
        self.boot_id = boot_id
        self.base_env = base_env
        self.targets = {}
        self.written = set()
        self.policy = PolicyState()
        self.changed = False
        self.by_handler = {}
        for ext in self.goal.extensions:
            self.by_handler.setdefault(ext.handler, []).append(ext)

    def signature_of(self, handler: HandlerName) -> str | None:
        """The goal state's `encodedSignature` for the package of `handler`, if any."""
        exts = self.by_handler.get(handler, ())
        return next((e.encoded_signature for e in exts if e.encoded_signature), None)

    def package_token(self, ref: PackageRef) -> str:
        """What identifies the package at `ref` for a remembered refusal: its file (see
        `package_token`), and the signature and the policy's requirement it was checked
        with, so that a new signature or a changed policy is tried again."""
        token = package_token(ref)
        signature = self.signature_of(ref.handler)
        required = self.policy.requires_signature(ref.handler)
        if signature is None and not required:
            return token
        digest = "-" if signature is None else hashlib.sha256(signature.encode()).hexdigest()
        return f"{token}/signature:{digest[:16]}:{'required' if required else 'optional'}"
