"""pytester for the plugin's own tests (pytester is not loaded by default)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
