"""pytest fixtures for handler authors and embedders (registered through `pytest11`).

- `exthandler_harness`: a `Harness` that runs one operation of one SDK handler class
  against a temporary HandlerEnvironment, with encrypted settings.
- `exthandler_agent`: an `Agent`, a real runtime on temporary dirs, with the commands it
  ran, fault injection, reboots and a runtime killed mid-operation; processes it started
  are killed at teardown.
- `exthandler_certificate_dir`: where the session's certificate pair lives.

The classes come from `exthandler.testing`, which is imported only when a fixture is first
used: pytest loads this module in every session of every project that has exthandler
installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import Agent, Harness, SigningCA

__all__ = [
    "exthandler_agent",
    "exthandler_certificate_dir",
    "exthandler_harness",
    "exthandler_signing_ca",
]


@pytest.fixture(scope="session")
def exthandler_certificate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's certificate pair lives (generated once, reused by every test)."""
    return tmp_path_factory.mktemp("exthandler-certificate")


@pytest.fixture(scope="session")
def exthandler_signing_ca(tmp_path_factory: pytest.TempPathFactory) -> SigningCA:
    """A throwaway CA for signed packages, made once per session: give it to an agent
    (`exthandler_agent.signing_ca = exthandler_signing_ca`) to sign what it adds with
    `sign=True` and to trust its root."""
    from .testing import SigningCA

    return SigningCA(tmp_path_factory.mktemp("exthandler-signing-ca"))


@pytest.fixture
def exthandler_harness(tmp_path: Path, exthandler_certificate_dir: Path) -> Harness:
    """Run one operation of an SDK handler class: `exthandler_harness.run(Handler, "enable",
    settings=..., protected_settings=...)` (or `await ....arun(...)` in async tests)."""
    from .testing import Harness

    return Harness(root=tmp_path / "exthandler-harness", certificate_dir=exthandler_certificate_dir)


@pytest.fixture
def exthandler_agent(tmp_path: Path, exthandler_certificate_dir: Path) -> Iterator[Agent]:
    """A runtime on temporary dirs: add handlers and packages, `apply` goal states, read
    the instance view and the commands; processes it started are killed at teardown."""
    from .testing import Agent

    with Agent(
        root=tmp_path / "exthandler-agent", certificate_dir=exthandler_certificate_dir
    ) as agent:
        yield agent
