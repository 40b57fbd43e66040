"""Fixtures for the SDK tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdk.sample_handlers import Defaults, Layout, Plain, Scripted


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The SDK runs on the backend of whoever awaits it: both are tested."""
    return str(request.param)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(lib=tmp_path / "lib").create()


@pytest.fixture(autouse=True)
def _forget_contexts() -> Iterator[None]:
    yield
    for handler in (Scripted, Plain, Defaults):
        handler.seen.clear()
