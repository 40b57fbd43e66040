"""exthandler-sdk: write VM extension handlers against a small, typed API."""

from ._errors import ExtHandlerError as ExtHandlerError
from ._errors import HandlerError as HandlerError
from ._hooks import hookimpl as hookimpl
from ._protocol import ErrorCode as ErrorCode
from ._protocol import Operation as Operation
from ._protocol import StatusLevel as StatusLevel

__all__ = [
    "ErrorCode",
    "ExtHandlerError",
    "HandlerError",
    "Operation",
    "StatusLevel",
    "hookimpl",
]
