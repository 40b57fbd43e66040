"""What the engine's parts share: the handler dirs' manifests, and the state of one pass.

`Manifests` outlives passes (a handler dir's manifest changes only when the dir is laid out
again); a `Pass` is made by each `Engine.apply` and dropped at its end, so that nothing of
one goal state leaks into the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import attrs

from .._errors import PackageError
from .._model import ExtensionGoal, GoalState, HandlerName, Version
from .._packages.manifest import MANIFEST_NAME, HandlerManifest, read_manifest
from .._packages.repository import PackageCatalog, PackageRef, package_token
from .._plan.planner import HandlerRecord, HandlerTarget
from .._policy.policy import PolicyState
from .._state.store import Store

__all__ = ["Manifests", "Pass"]


@attrs.define(eq=False)
class Manifests:
    """The manifests of the handler dirs, read once each, and why some could not be."""

    store: Store
    _found: dict[tuple[HandlerName, Version], HandlerManifest] = attrs.field(factory=dict)
    # Why a handler dir's manifest could not be read (1002 missing, 1003 unparsable).
    _errors: dict[tuple[HandlerName, Version], PackageError] = attrs.field(factory=dict)

    def get(self, handler: HandlerName, version: Version) -> HandlerManifest | None:
        key = (handler, version)
        manifest = self._found.get(key)
        if manifest is None:
            path = self.store.handler_dir(handler, version) / MANIFEST_NAME
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

    def is_multi(self, handler: HandlerName, version: Version) -> bool:
        manifest = self.get(handler, version)
        return manifest is not None and manifest.supports_multiple_extensions


@attrs.define(eq=False)
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
    targets: dict[HandlerName, HandlerTarget] = attrs.field(factory=dict)
    # The goal's extensions by handler, in the goal's order.
    by_handler: dict[HandlerName, list[ExtensionGoal]] = attrs.field(init=False)
    # Settings files written in this pass: (path, sequence number).
    written: set[tuple[str, int]] = attrs.field(factory=set)
    # The policy this pass runs under (processing on or off, the policy file's rules).
    policy: PolicyState = attrs.field(factory=PolicyState)

    def __attrs_post_init__(self) -> None:
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
