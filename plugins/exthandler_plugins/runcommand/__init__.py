"""The built-in Run Command handler (`Microsoft.CPlat.Core.RunCommandHandlerLinux`)."""

from ._handler import ExecutionState as ExecutionState
from ._handler import RunCommand as RunCommand
from ._settings import Parameter as Parameter
from ._settings import RunCommandProtectedSettings as RunCommandProtectedSettings
from ._settings import RunCommandSettings as RunCommandSettings
from ._settings import ScriptSource as ScriptSource

__all__ = [
    "ExecutionState",
    "Parameter",
    "RunCommand",
    "RunCommandProtectedSettings",
    "RunCommandSettings",
    "ScriptSource",
]
