"""A real HTTP server on 127.0.0.1 with scripted answers per path, for CustomScript."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator

import attrs
import pytest
from exthandler_plugins.customscript import CustomScript, DownloadPolicy

FAST = DownloadPolicy(attempts=4, backoff=0.01, max_backoff=0.05, deadline=10.0)


@attrs.define
class Route:
    """What a path answers: `failures` error answers first, then `body` (after `delay`)."""

    body: bytes = b""
    status: int = 200
    failures: list[int] = attrs.field(factory=list)
    delay: float = 0.0
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class FileServer:
    """The server's routes and what it saw (path with query, and headers, per request)."""

    port: int = 0
    routes: dict[str, Route] = attrs.field(factory=dict)
    requests: list[tuple[str, dict[str, str]]] = attrs.field(factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for seen, _ in self.requests if seen.split("?")[0] == path)


def _handler_class(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server.routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            if route.failures:
                code = route.failures.pop(0)
                self.send_response(code)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.delay:
                time.sleep(route.delay)
            self.send_response(route.status)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (deadline tests)
                self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(server))
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
