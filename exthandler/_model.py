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

from exthandler_sdk.protocol import EXTENSION_NAME_PATTERN, HANDLER_NAME_PATTERN, VERSION_PATTERN

from ._errors import GoalStateError, VersionError
from ._values import FrozenError, Value, field

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
_set = object.__setattr__


# A goal of 10,000 extensions spells a handful of versions: each is parsed once.
_PARSED_VERSIONS: dict[str, Version] = {}
_PARSED_VERSIONS_MAX = 4096


class _Frozen:
    """Instances whose attributes, once `__init__` set them, cannot change."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"{type(self).__name__}.{name}: value objects cannot be changed")


@functools.total_ordering
class Version(_Frozen):
    """A handler version: 2 to 4 dotted integers, compared with missing parts as 0.

    `Version.parse("2.1") == Version.parse("2.1.0")`; `str()` keeps the spelling given,
    which is also how handler directories are named.
    """

    __slots__ = ("key", "parts", "text")
    parts: tuple[int, ...]
    key: tuple[int, int, int, int]  # padded with zeros
    text: str  # str(): paths are built from it

    def __init__(self, parts: tuple[int, ...]) -> None:
        padded = (*parts, 0, 0, 0)
        _set(self, "parts", parts)
        _set(self, "key", (padded[0], padded[1], padded[2], padded[3]))
        _set(self, "text", ".".join(str(part) for part in parts))

    def __repr__(self) -> str:
        return f"Version(parts={self.parts!r})"

    @classmethod
    def parse(cls, text: str) -> Version:
        if not isinstance(text, str):
            raise VersionError(
                f"{text!r} is not a version (2 to 4 dot-separated integers, e.g. '2.1.3')"
            )
        known = _PARSED_VERSIONS.get(text)
        if known is not None and cls is Version:
            return known  # immutable: one value serves every goal that spells it so
        if not _VERSION_RE.match(text):
            raise VersionError(
                f"{text!r} is not a version (2 to 4 dot-separated integers, e.g. '2.1.3')"
            )
        version = cls(tuple(int(part) for part in text.split(".")))
        if cls is Version and len(_PARSED_VERSIONS) < _PARSED_VERSIONS_MAX:
            _PARSED_VERSIONS[text] = version
        return version

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


class HandlerName(_Frozen):
    """A handler's full name `Publisher.Type`; the type is the part after the last dot.

    Names compare case-insensitively (the wire formats match them that way) and keep the
    spelling they were given for display and for directory names.
    """

    __slots__ = ("key", "publisher", "text", "type")
    publisher: str
    type: str
    key: str  # lower-case full name, for comparing
    text: str  # the full name as given: str()

    def __init__(self, publisher: str, type: str) -> None:
        text = f"{publisher}.{type}"
        _set(self, "publisher", publisher)
        _set(self, "type", type)
        _set(self, "key", text.lower())
        _set(self, "text", text)

    def __repr__(self) -> str:
        return f"HandlerName(publisher={self.publisher!r}, type={self.type!r})"

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


class PlainProtectedSettings(Value):
    """Protected settings given in clear; the runtime encrypts them before writing anything."""

    value: Mapping[str, Any] = field(repr=False)


class EncryptedProtectedSettings(Value):
    """Protected settings already encrypted: base64 DER CMS enveloped data + thumbprint."""

    data: str = field(repr=False)
    thumbprint: str


ProtectedSettings = PlainProtectedSettings | EncryptedProtectedSettings


class ExtensionGoal(Value):
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
    encoded_signature: str | None = field(default=None, repr=False)

    @property
    def has_settings(self) -> bool:
        return self.public_settings is not None or self.protected_settings is not None


class StatusBlobType(enum.StrEnum):
    """How the status document is written to an Azure blob (`statusBlobType`)."""

    BLOCK_BLOB = "BlockBlob"
    PAGE_BLOB = "PageBlob"


class StatusUploadBlob(Value):
    """Where a goal state asks the status document to be uploaded: a SAS URL (a
    credential: never shown in a repr, a log or a message) and the blob type."""

    url: str = field(repr=False)
    blob_type: StatusBlobType = StatusBlobType.BLOCK_BLOB


class AgentFamily(Value):
    """An agent family a goal state names (native `agentFamilies`, ExtensionsConfig
    `GAFamilies/GAFamily`, vmSettings `gaFamilies`): its name, the agent version it asks
    for (None: none), and where its PluginVersionManifest is (none: the repositories).
    The URIs may carry credentials: never shown in a repr."""

    name: str
    version: Version | None = None
    uris: tuple[str, ...] = field(default=(), repr=False)


class GoalState(Value):
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
    # By the handler's lower-case name (a str hashes without a Python-level call).
    versions: dict[str, tuple[int, Version]] = {}
    multi: dict[str, list[int]] = {}
    for index, ext in enumerate(extensions):
        key = ext.name.lower()
        if key in seen:
            problems.append(
                f"{path}[{index}].name: duplicate extension name {ext.name!r}"
                f" (also {path}[{seen[key]}])"
            )
        else:
            seen[key] = index
        handler = ext.handler.key
        first = versions.setdefault(handler, (index, ext.version))
        if first[0] != index and first[1] != ext.version:
            problems.append(
                f"{path}[{index}].version: handler {ext.handler} is requested at {ext.version}"
                f" here and at {first[1]} in {path}[{first[0]}]; one handler runs at one version"
            )
        multi.setdefault(handler, []).append(index)
    for indexes in multi.values():
        if len(indexes) > 1 and False in {extensions[i].multi_config for i in indexes}:
            problems.append(
                f"{path}[{indexes[1]}]: handler {extensions[indexes[0]].handler} is not"
                f" multi-config but has {len(indexes)} extensions"
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
    if not any(ext.depends_on for ext in extensions):
        return []
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
