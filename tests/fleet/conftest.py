"""Fixtures of every fleet test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.fleet.sources_support import FileServer, file_server


@pytest.fixture(autouse=True)
def _http_log_filters() -> Iterator[None]:
    """Any HTTP request puts a redacting filter on the `httpx` logger for the process's
    life: taken off again after each fleet test, so that other tests find the logger as
    it was."""
    logger = logging.getLogger("httpx")
    before = list(logger.filters)
    yield
    logger.filters[:] = before


@pytest.fixture
def anyio_backend() -> str:
    """obstore's and httpx's async paths are exercised on asyncio."""
    return "asyncio"


@pytest.fixture
def http() -> Iterator[FileServer]:
    """A stdlib HTTP server of files, with faults on demand."""
    with file_server() as server:
        yield server
