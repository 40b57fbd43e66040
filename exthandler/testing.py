"""The testing kit: run SDK handler classes and whole runtimes in tests, and break them.

- `Harness` runs one operation of one handler class the way an agent runs a command, in a
  temporary handler dir with encrypted settings, and returns what it produced.
- `Agent` is a real runtime on temporary dirs: add handler classes and packages, apply
  goal states, read the instance view and the commands it ran (observed through the
  runtime's step hooks), inject faults, reboot, kill the runtime mid-operation.
- `SigningCA` is a throwaway certificate authority that signs packages as a publisher
  would, for runtimes that require signed packages.
- `check_lifecycle` drives a handler through its whole life; `validate_status` and
  `validate_heartbeat` check files strictly against the protocol.

Everything works without pytest; the plugin's `exthandler_harness` and `exthandler_agent`
fixtures are built from these classes.
"""

from ._testing._agent import Agent as Agent
from ._testing._agent import KilledApply as KilledApply
from ._testing._ca import Identity as Identity
from ._testing._ca import SigningCA as SigningCA
from ._testing._faults import Fault as Fault
from ._testing._faults import FaultKind as FaultKind
from ._testing._faults import faulty_class as faulty_class
from ._testing._faults import faulty_package as faulty_package
from ._testing._harness import Harness as Harness
from ._testing._harness import HarnessResult as HarnessResult
from ._testing._harness import Status as Status
from ._testing._harness import SubstatusEntry as SubstatusEntry
from ._testing._lifecycle import LifecyclePhase as LifecyclePhase
from ._testing._lifecycle import LifecycleReport as LifecycleReport
from ._testing._lifecycle import check_lifecycle as check_lifecycle
from ._testing._loop import TestingUsageError as TestingUsageError
from ._testing._record import CommandRecord as CommandRecord
from ._testing._validate import validate_heartbeat as validate_heartbeat
from ._testing._validate import validate_status as validate_status

__all__ = [
    "Agent",
    "CommandRecord",
    "Fault",
    "FaultKind",
    "Harness",
    "HarnessResult",
    "Identity",
    "KilledApply",
    "LifecyclePhase",
    "LifecycleReport",
    "SigningCA",
    "Status",
    "SubstatusEntry",
    "TestingUsageError",
    "check_lifecycle",
    "faulty_class",
    "faulty_package",
    "validate_heartbeat",
    "validate_status",
]
