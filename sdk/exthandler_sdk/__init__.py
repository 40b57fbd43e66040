"""exthandler-sdk: write VM extension handlers against a small, typed API."""

from ._context import Context as Context
from ._context import Detached as Detached
from ._environment import HandlerEnvironment as HandlerEnvironment
from ._errors import ExtHandlerError as ExtHandlerError
from ._errors import HandlerError as HandlerError
from ._handler import Handler as Handler
from ._hooks import hookimpl as hookimpl
from ._protocol import ErrorCode as ErrorCode
from ._protocol import Operation as Operation
from ._protocol import StatusLevel as StatusLevel
from ._runner import load_handler as load_handler
from ._runner import run_operation as run_operation
from ._settings import SettingsError as SettingsError
from ._status import Substatus as Substatus

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
