"""pytest fixtures for handler authors and embedders (registered through `pytest11`).

- `exthandler_harness`: runs one operation of one SDK handler class against a temporary
  HandlerEnvironment, with encrypted settings, and returns what it produced.
- `exthandler_agent`: a real runtime on temporary dirs, with the commands it ran, fault
  injection, reboots and a runtime killed mid-operation.

Nothing heavy is imported here at module level: pytest loads this module in every session
of every project that has exthandler installed, so the runtime is imported only when a
fixture is first used. The kit's names (`Fault`, `check_lifecycle`, ...) are importable
from this module too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._testing import Agent as Agent
    from ._testing import CommandRecord as CommandRecord
    from ._testing import Fault as Fault
    from ._testing import FaultKind as FaultKind
    from ._testing import Harness as Harness
    from ._testing import HarnessResult as HarnessResult
    from ._testing import KilledApply as KilledApply
    from ._testing import LifecycleReport as LifecycleReport
    from ._testing import TestingUsageError as TestingUsageError
    from ._testing import check_lifecycle as check_lifecycle
    from ._testing import validate_heartbeat as validate_heartbeat
    from ._testing import validate_status as validate_status

__all__ = [
    "Agent",
    "CommandRecord",
    "Fault",
    "FaultKind",
    "Harness",
    "HarnessResult",
    "KilledApply",
    "LifecycleReport",
    "TestingUsageError",
    "check_lifecycle",
    "exthandler_agent",
    "exthandler_certificate_dir",
    "exthandler_harness",
    "validate_heartbeat",
    "validate_status",
]

_LAZY = frozenset(__all__) - {
    "exthandler_agent",
    "exthandler_certificate_dir",
    "exthandler_harness",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _testing

        return getattr(_testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@pytest.fixture(scope="session")
def exthandler_certificate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's certificate pair lives (generated once, reused by every test)."""
    return tmp_path_factory.mktemp("exthandler-certificate")


@pytest.fixture
def exthandler_harness(tmp_path: Path, exthandler_certificate_dir: Path) -> Harness:
    """Run one operation of an SDK handler class: `exthandler_harness.run(Handler, "enable",
    settings=..., protected_settings=...)` (or `await ....arun(...)` in async tests)."""
    from ._testing import Harness

    return Harness(root=tmp_path / "exthandler-harness", certificate_dir=exthandler_certificate_dir)


@pytest.fixture
def exthandler_agent(tmp_path: Path, exthandler_certificate_dir: Path) -> Iterator[Agent]:
    """A runtime on temporary dirs: add handlers and packages, `apply` goal states, read
    the instance view and the commands; processes it started are killed at teardown."""
    from ._testing import Agent

    agent = Agent(root=tmp_path / "exthandler-agent", certificate_dir=exthandler_certificate_dir)
    try:
        yield agent
    finally:
        agent.close()
