"""Fixtures of every fleet test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _http_log_filters() -> Iterator[None]:
    """Any HTTP request puts a redacting filter on the `httpx` logger for the process's
    life: taken off again after each fleet test, so that other tests find the logger as
    it was."""
    logger = logging.getLogger("httpx")
    before = list(logger.filters)
    yield
    logger.filters[:] = before
