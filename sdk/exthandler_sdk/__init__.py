"""exthandler-sdk: write VM extension handlers against a small, typed API."""

from ._context import Context as Context
from ._context import Detached as Detached
from ._errors import ExtHandlerError as ExtHandlerError
from ._errors import HandlerError as HandlerError
from ._handler import Handler as Handler
from ._hooks import hookimpl as hookimpl
from ._runner import load_handler as load_handler
from ._runner import run_operation as run_operation
from ._settings import SettingsError as SettingsError
from .protocol import ErrorCode as ErrorCode
from .protocol import HandlerEnvironment as HandlerEnvironment
from .protocol import Operation as Operation
from .protocol import StatusLevel as StatusLevel
from .protocol import Substatus as Substatus

__all__ = [
    "Context",
    "Detached",
    "ErrorCode",
    "ExtHandlerError",
    "Handler",
    "HandlerEnvironment",
    "HandlerError",
    "Operation",
    "SettingsError",
    "StatusLevel",
    "Substatus",
    "hookimpl",
    "load_handler",
    "run_operation",
]
