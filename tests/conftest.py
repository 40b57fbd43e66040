"""Session-wide fixtures: the real storage servers shared by every test that needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Azurite, MotoS3, azurite_executable


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite blob service for the session (containers isolate tests)."""
    executable = azurite_executable()
    if executable is None:
        pytest.skip(
            "azurite-blob is not installed: `npm install --prefix .ci/node azurite@3.35.0` "
            "(or set EXTHANDLER_AZURITE)"
        )
    server = Azurite(executable, Path(tmp_path_factory.mktemp("azurite")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session (buckets isolate tests)."""
    server = MotoS3()
    yield server
    server.stop()
