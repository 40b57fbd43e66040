"""The testing kit behind `exthandler.pytest_plugin`: harness, agent, faults, lifecycle."""

from ._agent import Agent as Agent
from ._agent import KilledApply as KilledApply
from ._faults import Fault as Fault
from ._faults import FaultKind as FaultKind
from ._harness import Harness as Harness
from ._harness import HarnessResult as HarnessResult
from ._harness import Status as Status
from ._harness import SubstatusEntry as SubstatusEntry
from ._lifecycle import LifecyclePhase as LifecyclePhase
from ._lifecycle import LifecycleReport as LifecycleReport
from ._lifecycle import check_lifecycle as check_lifecycle
from ._loop import TestingUsageError as TestingUsageError
from ._record import CommandRecord as CommandRecord
from ._validate import validate_heartbeat as validate_heartbeat
from ._validate import validate_status as validate_status

__all__ = [
    "Agent",
    "CommandRecord",
    "Fault",
    "FaultKind",
    "Harness",
    "HarnessResult",
    "KilledApply",
    "LifecyclePhase",
    "LifecycleReport",
    "Status",
    "SubstatusEntry",
    "TestingUsageError",
    "check_lifecycle",
    "validate_heartbeat",
    "validate_status",
]
