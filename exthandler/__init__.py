"""exthandler: a runtime that converges VM extension goal states."""

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
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeConfig as RuntimeConfig
from ._runtime import open_runtime as open_runtime
from ._runtime import read_instance_view as read_instance_view

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
