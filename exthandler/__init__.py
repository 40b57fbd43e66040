"""exthandler: a runtime that converges VM extension goal states."""

from exthandler_sdk import ExtHandlerError as ExtHandlerError

from ._errors import GoalStateError as GoalStateError
from ._errors import NoEligibleVersionError as NoEligibleVersionError
from ._errors import PackageError as PackageError
from ._errors import VersionError as VersionError
from ._manifest import HandlerManifest as HandlerManifest
from ._manifest import parse_manifest as parse_manifest
from ._model import ExtensionGoal as ExtensionGoal
from ._model import GoalState as GoalState
from ._model import GoalStateFormat as GoalStateFormat
from ._model import HandlerName as HandlerName
from ._model import RequestedState as RequestedState
from ._model import Version as Version
from ._versions import select_version as select_version

__version__ = "0.1.0"

__all__ = [
    "ExtHandlerError",
    "ExtensionGoal",
    "GoalState",
    "GoalStateError",
    "GoalStateFormat",
    "HandlerManifest",
    "HandlerName",
    "NoEligibleVersionError",
    "PackageError",
    "RequestedState",
    "Version",
    "VersionError",
    "__version__",
    "parse_manifest",
    "select_version",
]
