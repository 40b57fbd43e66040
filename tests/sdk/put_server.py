"""A stdlib HTTP server that records PUT requests and answers them as told.

Each request is recorded (method, path with query, headers, body) before it is answered.
Answers come from `script`, a list consumed front to back (status, headers, body); when it
is empty every request gets `default`. An answer whose status is 0 holds the request open
until `release` is set: the client's timeout is what ends it.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class PutServer:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [s.body for s in self.seen if s.path.split("?")[0] == path]


def _handler(server: PutServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with server.lock:
                server.seen.append(
                    Seen("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                answer = server.script.pop(0) if server.script else server.default
            if answer.status == 0:
                server.release.wait()
                self.close_connection = True
                return
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def put_server() -> Iterator[PutServer]:
    """A running PutServer on 127.0.0.1 (stopped, and held requests released, on exit)."""
    state = PutServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
