"""Names and numbers of the extension protocol, shared by the SDK and the runtime.

These are facts of the on-disk protocol the reference Linux guest agent speaks (its
operation names, error codes and status vocabulary); nothing here does I/O.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "Operation", "StatusLevel"]


class Operation(enum.StrEnum):
    """A handler command, named as HandlerManifest.json names it without `Command`."""

    INSTALL = "install"
    ENABLE = "enable"
    DISABLE = "disable"
    UPDATE = "update"
    UNINSTALL = "uninstall"

    @property
    def manifest_key(self) -> str:
        """The HandlerManifest.json key holding this operation's command."""
        return f"{self.value}Command"

    @property
    def display_name(self) -> str:
        """The operation as status files spell it (`Enable`)."""
        return self.value.capitalize()


class StatusLevel(enum.StrEnum):
    """The values of `status.status` in an extension's status file."""

    TRANSITIONING = "transitioning"
    WARNING = "warning"
    ERROR = "error"
    SUCCESS = "success"

    @property
    def terminal(self) -> bool:
        return self is not StatusLevel.TRANSITIONING


class ErrorCode(enum.IntEnum):
    """Error codes of the reference agent, plus the authors' conventional exit codes."""

    UNKNOWN = -1
    SUCCESS = 0
    UNSUPPORTED_OS = 51
    MISSING_DEPENDENCY = 52
    CONFIGURATION = 53
    UNINSTALL_FAILED = 1000
    MANIFEST_DOWNLOAD = 1001
    MANIFEST_NOT_FOUND = 1002
    MANIFEST_UNPARSABLE = 1003
    PACKAGE_DOWNLOAD = 1004
    PACKAGE_EXTRACTION = 1005
    INSTALL_FAILED = 1007
    UPDATE_FAILED = 1008
    ENABLE_FAILED = 1009
    DISABLE_FAILED = 1010
    COMMAND_TIMEOUT = 1011
    STATUS_INVALID = 1012

    @classmethod
    def for_operation(cls, operation: Operation) -> ErrorCode:
        """The code a failing command of `operation` is reported with."""
        return _OPERATION_CODES[operation]


_OPERATION_CODES = {
    Operation.INSTALL: ErrorCode.INSTALL_FAILED,
    Operation.UPDATE: ErrorCode.UPDATE_FAILED,
    Operation.DISABLE: ErrorCode.DISABLE_FAILED,
    Operation.ENABLE: ErrorCode.ENABLE_FAILED,
    Operation.UNINSTALL: ErrorCode.UNINSTALL_FAILED,
}
