"""The runtime's errors; all derive from the SDK's `ExtHandlerError`."""

from __future__ import annotations

from collections.abc import Iterable

from exthandler_sdk import ErrorCode, ExtHandlerError

__all__ = [
    "ExtHandlerError",
    "GoalStateError",
    "NoEligibleVersionError",
    "PackageError",
    "StateDirError",
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
    1004 download, 1005 extraction).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StateDirError(ExtHandlerError, OSError):
    """The state dir, the log root or a file of the runtime's own cannot be used.

    The message is one line, `path: reason` (the CLI prints it and exits 2): a missing or
    unwritable directory, one that another user owns or others can write to, a full or
    read-only file system under the runtime's own files.
    """
