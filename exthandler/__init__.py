"""exthandler: a runtime that converges VM extension goal states."""

# Every public name is imported on first use (PEP 562): `exthandler --version` imports
# none of the runtime, and `exthandler status` only what reading a view takes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from exthandler_sdk import ExtHandlerError as ExtHandlerError

    from ._engine import Plan as Plan
    from ._errors import GoalStateError as GoalStateError
    from ._errors import NoEligibleVersionError as NoEligibleVersionError
    from ._errors import PackageError as PackageError
    from ._errors import StateDirLockedError as StateDirLockedError
    from ._errors import VersionError as VersionError
    from ._executors.base import CommandRequest as CommandRequest
    from ._executors.base import Executor as Executor
    from ._executors.process import CommandResult as CommandResult
    from ._goalstate import load_goal_state as load_goal_state
    from ._goalstate import parse_goal_state as parse_goal_state
    from ._model import EncryptedProtectedSettings as EncryptedProtectedSettings
    from ._model import ExtensionGoal as ExtensionGoal
    from ._model import GoalState as GoalState
    from ._model import GoalStateFormat as GoalStateFormat
    from ._model import HandlerName as HandlerName
    from ._model import PlainProtectedSettings as PlainProtectedSettings
    from ._model import RequestedState as RequestedState
    from ._model import Version as Version
    from ._packages.manifest import HandlerManifest as HandlerManifest
    from ._packages.manifest import parse_manifest as parse_manifest
    from ._packages.repository import DirectoryRepository as DirectoryRepository
    from ._packages.repository import Installed as Installed
    from ._packages.repository import PackageRef as PackageRef
    from ._packages.repository import PackageSource as PackageSource
    from ._packages.repository import RepositorySet as RepositorySet
    from ._packages.repository import Workspace as Workspace
    from ._packages.repository import install_zip as install_zip
    from ._plan.course import PlannedStep as PlannedStep
    from ._plan.versions import select_version as select_version
    from ._plugins import StepResult as StepResult
    from ._plugins import make_plugin_manager as make_plugin_manager
    from ._report.events import EventsDropped as EventsDropped
    from ._report.events import EventStream as EventStream
    from ._report.events import ExtensionChanged as ExtensionChanged
    from ._report.events import PassFinished as PassFinished
    from ._report.events import PassStarted as PassStarted
    from ._report.events import StepFinished as StepFinished
    from ._report.events import StepStarted as StepStarted
    from ._report.view import ExtensionView as ExtensionView
    from ._report.view import InstanceView as InstanceView
    from ._report.view import StatusView as StatusView
    from ._report.view import SubstatusView as SubstatusView
    from ._report.view import read_instance_view as read_instance_view
    from ._runtime import Runtime as Runtime
    from ._runtime import RuntimeConfig as RuntimeConfig
    from ._runtime import open_runtime as open_runtime
del TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "CommandRequest",
    "CommandResult",
    "DirectoryRepository",
    "EncryptedProtectedSettings",
    "EventStream",
    "EventsDropped",
    "Executor",
    "ExtHandlerError",
    "ExtensionChanged",
    "ExtensionGoal",
    "ExtensionView",
    "GoalState",
    "GoalStateError",
    "GoalStateFormat",
    "HandlerManifest",
    "HandlerName",
    "Installed",
    "InstanceView",
    "NoEligibleVersionError",
    "PackageError",
    "PackageRef",
    "PackageSource",
    "PassFinished",
    "PassStarted",
    "PlainProtectedSettings",
    "Plan",
    "PlannedStep",
    "RepositorySet",
    "RequestedState",
    "Runtime",
    "RuntimeConfig",
    "StateDirLockedError",
    "StatusView",
    "StepFinished",
    "StepResult",
    "StepStarted",
    "SubstatusView",
    "Version",
    "VersionError",
    "Workspace",
    "__version__",
    "install_zip",
    "load_goal_state",
    "make_plugin_manager",
    "open_runtime",
    "parse_goal_state",
    "parse_manifest",
    "read_instance_view",
    "select_version",
]

# Public name -> the module that defines it (relative to this package, or absolute).
_HOMES = {
    "CommandRequest": "._executors.base",
    "CommandResult": "._executors.process",
    "DirectoryRepository": "._packages.repository",
    "EncryptedProtectedSettings": "._model",
    "EventStream": "._report.events",
    "EventsDropped": "._report.events",
    "Executor": "._executors.base",
    "ExtHandlerError": "exthandler_sdk",
    "ExtensionChanged": "._report.events",
    "ExtensionGoal": "._model",
    "ExtensionView": "._report.view",
    "GoalState": "._model",
    "GoalStateError": "._errors",
    "GoalStateFormat": "._model",
    "HandlerManifest": "._packages.manifest",
    "HandlerName": "._model",
    "Installed": "._packages.repository",
    "InstanceView": "._report.view",
    "NoEligibleVersionError": "._errors",
    "PackageError": "._errors",
    "PackageRef": "._packages.repository",
    "PackageSource": "._packages.repository",
    "PassFinished": "._report.events",
    "PassStarted": "._report.events",
    "PlainProtectedSettings": "._model",
    "Plan": "._engine",
    "PlannedStep": "._plan.course",
    "RepositorySet": "._packages.repository",
    "RequestedState": "._model",
    "Runtime": "._runtime",
    "RuntimeConfig": "._runtime",
    "StateDirLockedError": "._errors",
    "StatusView": "._report.view",
    "StepFinished": "._report.events",
    "StepResult": "._plugins",
    "StepStarted": "._report.events",
    "SubstatusView": "._report.view",
    "Version": "._model",
    "VersionError": "._errors",
    "Workspace": "._packages.repository",
    "install_zip": "._packages.repository",
    "load_goal_state": "._goalstate",
    "make_plugin_manager": "._plugins",
    "open_runtime": "._runtime",
    "parse_goal_state": "._goalstate",
    "parse_manifest": "._packages.manifest",
    "read_instance_view": "._report.view",
    "select_version": "._plan.versions",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name = __name__ + home if home.startswith(".") else home
    value = getattr(__import__(module_name, fromlist=[name]), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
