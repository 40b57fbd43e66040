"""exthandler-sdk: write VM extension handlers against a small, typed API."""

# Every public name is imported on first use (PEP 562), so that a command pays only for
# the parts of the SDK it touches: an enable whose sequence number was already applied
# never imports the event loop, the settings converter or the cryptography.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
del TYPE_CHECKING

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

# Public name -> the module that defines it.
_HOMES = {
    "Context": "_context",
    "Detached": "_context",
    "ErrorCode": "protocol",
    "ExtHandlerError": "_errors",
    "Handler": "_handler",
    "HandlerEnvironment": "protocol",
    "HandlerError": "_errors",
    "Operation": "protocol",
    "SettingsError": "_settings",
    "StatusLevel": "protocol",
    "Substatus": "protocol",
    "hookimpl": "_hooks",
    "load_handler": "_runner",
    "run_operation": "_runner",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = __import__(f"{__name__}.{home}", fromlist=[name])
    value = getattr(module, name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
