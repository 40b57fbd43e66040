"""Value objects shared by every part of the runtime: names, versions, goal states.

Everything here is immutable and free of I/O. Parsers build these; the planner and the
engine only read them.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from typing import Any

import attrs
from exthandler_sdk.protocol import EXTENSION_NAME_PATTERN, HANDLER_NAME_PATTERN, VERSION_PATTERN

from ._errors import GoalStateError, VersionError

__all__ = [
    "AgentFamily",
    "EncryptedProtectedSettings",
    "ExtensionGoal",
    "GoalState",
    "GoalStateFormat",
    "HandlerName",
    "PlainProtectedSettings",
    "ProtectedSettings",
    "RequestedState",
    "StatusBlobType",
    "StatusUploadBlob",
    "Version",
    "validate_extension_name",
]

_VERSION_RE = re.compile(rf"\A{VERSION_PATTERN}\Z")
# Names end up in file and directory names, so they are restricted to a safe alphabet.
_HANDLER_RE = re.compile(rf"\A{HANDLER_NAME_PATTERN}\Z")
_EXTENSION_RE = re.compile(rf"\A{EXTENSION_NAME_PATTERN}\Z")


@functools.total_ordering
@attrs.frozen(eq=False, order=False)
class Version:
    """A handler version: 2 to 4 dotted integers, compared with missing parts as 0.

    `Version.parse("2.1") == Version.parse("2.1.0")`; `str()` keeps the spelling given,
    which is also how handler directories are named.
    """

    parts: tuple[int, ...]
    key: tuple[int, int, int, int] = attrs.field(init=False, repr=False)  # padded with zeros
    text: str = attrs.field(init=False, repr=False, eq=False)  # str(): paths are built from it

    @key.default
    def _key(self) -> tuple[int, int, int, int]:
        padded = (*self.parts, 0, 0, 0)
        return (padded[0], padded[1], padded[2], padded[3])

    @text.default
    def _text(self) -> str:
        return ".".join(str(part) for part in self.parts)

    @classmethod
    def parse(cls, text: str) -> Version:
        if not isinstance(text, str) or not _VERSION_RE.match(text):
            raise VersionError(
                f"{text!r} is not a version (2 to 4 dot-separated integers, e.g. '2.1.3')"
            )
        return cls(tuple(int(part) for part in text.split(".")))

    @property
    def major(self) -> int:
        return self.parts[0]

    @property
    def minor(self) -> int:
        return self.parts[1]

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)


@attrs.frozen(eq=False)
class HandlerName:
    """A handler's full name `Publisher.Type`; the type is the part after the last dot.

    Names compare case-insensitively (the wire formats match them that way) and keep the
    spelling they were given for display and for directory names.
    """

    publisher: str
    type: str
    key: str = attrs.field(init=False, repr=False)  # lower-case full name, for comparing
    text: str = attrs.field(init=False, repr=False)  # the full name as given: str()

    @key.default
    def _key(self) -> str:
        return f"{self.publisher}.{self.type}".lower()

    @text.default
    def _text(self) -> str:
        return f"{self.publisher}.{self.type}"

    @classmethod
    def parse(cls, text: str) -> HandlerName:
        if not isinstance(text, str) or not _HANDLER_RE.match(text):
            raise ValueError(
                f"{text!r} is not a handler name 'Publisher.Type' (letters, digits, '_', '-'"
                " in dot-separated parts)"
            )
        publisher, _, type_ = text.rpartition(".")
        return cls(publisher, type_)

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HandlerName):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def validate_extension_name(text: str) -> str:
    """Return `text` if it can name an extension (and so a file), else raise ValueError."""
    if not isinstance(text, str) or not _EXTENSION_RE.match(text) or ".." in text:
        raise ValueError(
            f"{text!r} is not an extension name (1 to 128 letters, digits, '_', '-', '.';"
            " starting with a letter, digit or '_')"
        )
    return text


class RequestedState(enum.StrEnum):
    """What a goal state asks of an extension."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    UNINSTALL = "uninstall"


class GoalStateFormat(enum.StrEnum):
    """The formats a goal state may be written in (detected from the content)."""

    NATIVE = "native"
    ARM = "arm"
    EXTENSIONS_CONFIG = "extensionsConfig"
    VM_SETTINGS = "vmSettings"


@attrs.frozen(kw_only=True)
class PlainProtectedSettings:
    """Protected settings given in clear; the runtime encrypts them before writing anything."""

    value: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class EncryptedProtectedSettings:
    """Protected settings already encrypted: base64 DER CMS enveloped data + thumbprint."""

    data: str = attrs.field(repr=False)
    thumbprint: str


ProtectedSettings = PlainProtectedSettings | EncryptedProtectedSettings


@attrs.frozen(kw_only=True)
class ExtensionGoal:
    """One extension as a goal state requests it.

    `depends_on` names extensions (or, from the wire formats, handlers) that must reach a
    terminal status first. `sequence_number` is given by the wire formats and left `None`
    by the native and ARM formats, for which the runtime numbers settings itself.
    `settings_error` is set when the wire format carried settings that cannot be used: the
    extension is still listed, and reported in error.
    `multi_config` is `None` when the format does not say; the manifest decides then.
    `package_locations` name the handler's PluginVersionManifest (the `location` first,
    then the failover ones); when there is one, packages come from it, not from the
    repositories.
    `encoded_signature` is the base64 DER CMS detached signature of the handler's package,
    when the goal state gives one (see docs/policy.md).
    """

    name: str
    handler: HandlerName
    version: Version
    state: RequestedState = RequestedState.ENABLED
    auto_upgrade_minor: bool = False
    use_exact_version: bool = False
    public_settings: Mapping[str, Any] | None = None
    protected_settings: ProtectedSettings | None = None
    sequence_number: int | None = None
    force_update_tag: str | None = None
    depends_on: tuple[str, ...] = ()
    dependency_level: int = 0
    multi_config: bool | None = None
    settings_error: str | None = None
    package_locations: tuple[str, ...] = ()
    encoded_signature: str | None = attrs.field(default=None, repr=False)

    @property
    def has_settings(self) -> bool:
        return self.public_settings is not None or self.protected_settings is not None


class StatusBlobType(enum.StrEnum):
    """How the status document is written to an Azure blob (`statusBlobType`)."""

    BLOCK_BLOB = "BlockBlob"
    PAGE_BLOB = "PageBlob"


@attrs.frozen(kw_only=True)
class StatusUploadBlob:
    """Where a goal state asks the status document to be uploaded: a SAS URL (a
    credential: never shown in a repr, a log or a message) and the blob type."""

    url: str = attrs.field(repr=False)
    blob_type: StatusBlobType = StatusBlobType.BLOCK_BLOB


@attrs.frozen(kw_only=True)
class AgentFamily:
    """An agent family a goal state names (native `agentFamilies`, ExtensionsConfig
    `GAFamilies/GAFamily`, vmSettings `gaFamilies`): its name, the agent version it asks
    for (None: none), and where its PluginVersionManifest is (none: the repositories).
    The URIs may carry credentials: never shown in a repr."""

    name: str
    version: Version | None = None
    uris: tuple[str, ...] = attrs.field(default=(), repr=False)


@attrs.frozen(kw_only=True)
class GoalState:
    """A whole goal state: every extension the VM should have, and in which state.

    `status_upload_blob` and `in_svd_seq_no` come from the wire formats (ExtensionsConfig
    `StatusUploadBlob` and `InVMGoalStateMetaData@inSvdSeqNo`, vmSettings
    `statusUploadBlob` and `inSvdSeqNo`): where the status document goes, and the
    sequence number it reports the goal state under.
    """

    id: str
    extensions: tuple[ExtensionGoal, ...]
    format: GoalStateFormat = GoalStateFormat.NATIVE
    incarnation: int | None = None
    status_upload_blob: StatusUploadBlob | None = None
    in_svd_seq_no: str | None = None
    agent_families: tuple[AgentFamily, ...] = ()

    def extension(self, name: str) -> ExtensionGoal | None:
        """The extension called `name` (case-insensitive), if any."""
        wanted = name.lower()
        return next((e for e in self.extensions if e.name.lower() == wanted), None)

    def check(self) -> GoalState:
        """Raise GoalStateError listing every cross-extension inconsistency, else return self."""
        problems = consistency_problems(self.extensions)
        if problems:
            raise GoalStateError(problems)
        return self


def consistency_problems(
    extensions: tuple[ExtensionGoal, ...], *, path: str = "extensions"
) -> list[str]:
    """Problems that involve several extensions: duplicates, versions, dependencies, cycles."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    versions: dict[HandlerName, tuple[int, Version]] = {}
    multi: dict[HandlerName, list[int]] = {}
    for index, ext in enumerate(extensions):
        here = f"{path}[{index}]"
        key = ext.name.lower()
        if key in seen:
            problems.append(
                f"{here}.name: duplicate extension name {ext.name!r} (also {path}[{seen[key]}])"
            )
        else:
            seen[key] = index
        first = versions.setdefault(ext.handler, (index, ext.version))
        if first[1] != ext.version:
            problems.append(
                f"{here}.version: handler {ext.handler} is requested at {ext.version} here and"
                f" at {first[1]} in {path}[{first[0]}]; one handler runs at one version"
            )
        multi.setdefault(ext.handler, []).append(index)
    for handler, indexes in multi.items():
        flags = {extensions[i].multi_config for i in indexes}
        if len(indexes) > 1 and False in flags:
            problems.append(
                f"{path}[{indexes[1]}]: handler {handler} is not multi-config but has"
                f" {len(indexes)} extensions"
            )
    names = {e.name.lower() for e in extensions} | {e.handler.key for e in extensions}
    for index, ext in enumerate(extensions):
        for dep_index, dep in enumerate(ext.depends_on):
            if dep.lower() not in names:
                problems.append(
                    f"{path}[{index}].dependsOn[{dep_index}]: {dep!r} is not an extension of"
                    " this goal state"
                )
    cycle = _find_cycle(extensions)
    if cycle:
        problems.append(f"{path}: dependency cycle {' -> '.join(cycle)}")
    return problems


def _find_cycle(extensions: tuple[ExtensionGoal, ...]) -> list[str]:
    by_key: dict[str, list[ExtensionGoal]] = {}
    for ext in extensions:
        by_key.setdefault(ext.name.lower(), []).append(ext)
        if ext.handler.key != ext.name.lower():
            by_key.setdefault(ext.handler.key, []).append(ext)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(ext: ExtensionGoal) -> list[str]:
        key = ext.name.lower()
        if state.get(key) == 2:
            return []
        if state.get(key) == 1:
            return [*stack[stack.index(ext.name) :], ext.name]
        state[key] = 1
        stack.append(ext.name)
        for dep in ext.depends_on:
            for target in by_key.get(dep.lower(), []):
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[key] = 2
        return []

    for ext in extensions:
        found = visit(ext)
        if found:
            return found
    return []
