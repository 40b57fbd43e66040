"""The runtime's errors; all derive from the SDK's `ExtHandlerError`."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, TypeVar

from exthandler_sdk import ExtHandlerError

if TYPE_CHECKING:
    from exthandler_sdk import ErrorCode

__all__ = [
    "ExtHandlerError",
    "GoalStateError",
    "NoEligibleVersionError",
    "PackageError",
    "StateDirError",
    "StateDirLockedError",
    "VersionError",
]


class GoalStateError(ExtHandlerError, ValueError):
    """A goal state (or an argument standing for one) is invalid.

    `problems` holds every problem found, each as `path: reason`.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or ("$: invalid goal state",)
        super().__init__("\n".join(self.problems))


class VersionError(ExtHandlerError, ValueError):
    """A string is not a handler version (2 to 4 dotted non-negative integers)."""


class NoEligibleVersionError(ExtHandlerError, LookupError):
    """No available version satisfies a request under the upgrade policy."""


class PackageError(ExtHandlerError):
    """A handler package could not be fetched, verified, extracted or understood.

    `code` is the protocol error code (1002 manifest not found, 1003 manifest unparsable,
    1004 download, 1005 extraction). `transient` is true when the package itself was not
    found wanting (the download did not go through, the disk was full): the runtime tries
    again at its next pass, where a refusal stands until the goal or the package changes.
    """

    def __init__(self, code: ErrorCode, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._transient = transient

    @property
    def transient(self) -> bool:
        return self._transient or environment_errno(self.__cause__) is not None


class StateDirError(ExtHandlerError, OSError):
    """The state dir, the log root or a file of the runtime's own cannot be used.

    The message is one line, `path: reason` (the CLI prints it and exits 2): a missing or
    unwritable directory, one that another user owns or others can write to, a full or
    read-only file system under the runtime's own files.
    """


class StateDirLockedError(ExtHandlerError, RuntimeError):
    """Another runtime holds the state dir (the CLI exits 3)."""


# Errors of the machine, not of a package: whatever failed with one of these may work later.
_ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.EAGAIN,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


def environment_errno(exc: BaseException | None) -> int | None:
    """The errno of the first OSError in `exc`'s chain of causes that says the machine
    (disk, memory, network), not the input, was at fault; None if there is none."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


_T = TypeVar("_T")


async def state_dir_error_alone(work: Awaitable[_T]) -> _T:
    """Await `work`; a StateDirError from one of its tasks comes out alone, not wrapped in
    an exception group, so that callers (the CLI) can name the path and exit 2."""
    try:
        return await work
    except BaseExceptionGroup as group:
        found = _first_state_dir_error(group)
        if found is None:
            raise
        raise found from None


def _first_state_dir_error(group: BaseExceptionGroup[BaseException]) -> StateDirError | None:
    for exc in group.exceptions:
        if isinstance(exc, StateDirError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_state_dir_error(exc)
            if found is not None:
                return found
    return None
