"""The one exception root shared by the SDK and the runtime."""

from __future__ import annotations

__all__ = ["ExtHandlerError", "HandlerError"]


class ExtHandlerError(Exception):
    """Root of every error raised by exthandler and its SDK."""


class HandlerError(ExtHandlerError):
    """Raised by a handler to end an operation with an `error` status and a chosen code.

    `code` is what the status reports (and the exit code out of process); by convention
    51 means unsupported OS, 52 a missing dependency and 53 a configuration error.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"
