"""Fixtures for the CustomScript tests (their helpers live in `tests.plugins.support`)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from exthandler_plugins.customscript import CustomScript

from tests.plugins.support import FAST, FileServer, handler_class


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _fast_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CustomScript, "download_policy", FAST)
