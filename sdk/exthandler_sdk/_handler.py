"""`Handler`: the class extension authors subclass."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._errors import ExtHandlerError
from .protocol import HANDLER_NAME_PATTERN, VERSION_PATTERN, Operation

if TYPE_CHECKING:
    from ._context import Context
    from .protocol import HandlerManifest

__all__ = ["Handler", "HandlerDefinitionError", "P", "S", "manifest"]

S = TypeVar("S")
P = TypeVar("P")

_NAME = re.compile(HANDLER_NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)


class HandlerDefinitionError(ExtHandlerError, TypeError):
    """A Handler subclass is not usable (bad name, version or settings types)."""


class Handler(Generic[S, P]):
    """Base class of an extension handler.

    Subclass it with the attrs classes of the public (`S`) and protected (`P`) settings,
    or `None` for either when the handler takes none, and set `name` (`Publisher.Type`)
    and `version`. Override the operations the handler needs; the others succeed.

    Manifest options are class attributes too: `report_heartbeat`,
    `supports_multiple_extensions`, `update_mode`, `continue_on_update_failure`; and
    `enable_runs_on_same_sequence` lets enable run again for a sequence that succeeded.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    report_heartbeat: ClassVar[bool] = False
    supports_multiple_extensions: ClassVar[bool] = False
    update_mode: ClassVar[str] = "UpdateWithInstall"
    continue_on_update_failure: ClassVar[bool] = False
    # A repeated enable of a sequence number that already succeeded (after a reboot, say)
    # is skipped unless this is True: handlers that start daemons may want to run again.
    enable_runs_on_same_sequence: ClassVar[bool] = False
    # Seconds an operation may take when the handler runs in process (operation name ->
    # seconds), where the reference agent's limits are too short for its work; a
    # runtime's own command-timeout settings still override it.
    command_timeouts: ClassVar[Mapping[str, float]] = {}

    async def install(self, ctx: Context[S, P]) -> None:
        """Prepare the machine (runs once per version)."""

    async def enable(self, ctx: Context[S, P]) -> None:
        """Apply the settings: runs once for each new sequence number.

        A repeated enable of a sequence that already succeeded (after a reboot, or after a
        disable) does not call this again unless `enable_runs_on_same_sequence` is True.
        """

    async def disable(self, ctx: Context[S, P]) -> None:
        """Stop what enable started."""

    async def update(self, ctx: Context[S, P]) -> None:
        """Runs in the new version when replacing `ctx.updating_from_version`."""

    async def uninstall(self, ctx: Context[S, P]) -> None:
        """Remove what install added."""

    @classmethod
    def settings_types(cls) -> tuple[type[Any] | None, type[Any] | None]:
        """The (public, protected) settings classes given as `Handler[S, P]`."""
        for klass in cls.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                if typing.get_origin(base) is Handler:
                    public, protected = typing.get_args(base)
                    return _none_or_type(public), _none_or_type(protected)
        return None, None

    @classmethod
    def implements(cls, operation: Operation | str) -> bool:
        """Whether the class (or a base of its own) defines `operation` rather than keeping
        `Handler`'s, which does nothing."""
        name = Operation(operation).value
        return getattr(cls, name) is not getattr(Handler, name)

    @classmethod
    def manifest(cls) -> HandlerManifest:
        """The HandlerManifest.json of the class (docs/protocol.md#packages): the same in a
        package and in a handler dir laid out for an in-process run."""
        from .protocol import HandlerManifest  # the manifest's model, only when asked for

        return HandlerManifest(
            name=cls.name.rpartition(".")[2],
            version="1.0",
            commands={op: f"bin/{op.value}" for op in Operation},
            reboot_after_install=False,
            report_heartbeat=bool(cls.report_heartbeat),
            supports_multiple_extensions=bool(cls.supports_multiple_extensions),
            update_mode=str(cls.update_mode),
            continue_on_update_failure=bool(cls.continue_on_update_failure),
        )

    @classmethod
    def check(cls) -> None:
        """Raise HandlerDefinitionError unless the class can be run and packaged."""
        name = getattr(cls, "name", None)
        version = getattr(cls, "version", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise HandlerDefinitionError(
                f"{cls.__qualname__}.name must be 'Publisher.Type', got {name!r}"
            )
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise HandlerDefinitionError(
                f"{cls.__qualname__}.version must be 2 to 4 dotted integers, got {version!r}"
            )


def manifest(handler_class: type[Handler[Any, Any]]) -> list[dict[str, Any]]:
    """The HandlerManifest.json document for `handler_class` (docs/protocol.md#packages):
    the same in a package and in a handler dir laid out for an in-process run."""
    from .protocol import manifest_document

    return manifest_document(handler_class.manifest())


def _none_or_type(value: Any) -> type[Any] | None:
    if value is None or value is type(None) or isinstance(value, TypeVar):
        return None
    if isinstance(value, type | types.GenericAlias):
        return value  # type: ignore[return-value]
    raise HandlerDefinitionError(f"settings type must be a class or None, got {value!r}")
