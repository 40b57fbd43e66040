"""A plain HTTP server for the remote-source tests, with the faults real servers have.

Files are served from a dict; each path can be given a fault (500s, a truncated body, a
wrong Content-Length, a stall, a redirect). Every request is recorded, so tests assert on
what was asked and answered, never on time.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs


@attrs.define
class Fault:
    """What to do instead of serving a path: `status` (answered that many times, then the
    file is served), `truncate` (send only that many bytes of the body, then close),
    `length` (declare that Content-Length), `stall` (seconds before answering), `redirect`
    (a Location to send with 302)."""

    status: int | None = None
    times: int = 1_000_000
    truncate: int | None = None
    length: int | None = None
    stall: float = 0.0
    redirect: str | None = None


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    status: int


class FileServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving `files` with strong ETags."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: list[Request] = []
        self.down = False
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self, status: int) -> None:
                with server._lock:
                    server.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), status)
                    )

            def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
                self._record(status)
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if server.down:
                    self._record(-1)
                    self.close_connection = True
                    self.connection.close()
                    return
                fault = server.faults.get(path)
                if fault is not None and fault.stall:
                    time.sleep(fault.stall)
                if fault is not None and fault.redirect is not None:
                    self._send(302, Location=fault.redirect)
                    return
                if fault is not None and fault.status is not None and fault.times > 0:
                    fault.times -= 1
                    self._send(fault.status, b"fault")
                    return
                body = server.files.get(path)
                if body is None:
                    self._send(404, b"not found")
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, ETag=etag)
                    return
                if fault is not None and (fault.truncate is not None or fault.length is not None):
                    length = fault.length if fault.length is not None else len(body)
                    sent = body if fault.truncate is None else body[: fault.truncate]
                    self._record(200)
                    self.send_response(200)
                    self.send_header("Content-Length", str(length))
                    self.send_header("ETag", etag)
                    self.end_headers()
                    self.wfile.write(sent)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, body, ETag=etag)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                server.files[self.path.split("?", 1)[0]] = data
                self._send(201)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(
                1 for r in self.requests if r.path.split("?")[0] == path and r.method == method
            )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.stop()


def handler_zip(name: str = "Sample", version: str = "1.0.0", enable: str = "true") -> bytes:
    """A real handler package: a manifest and an enable script that reports success."""
    manifest = [
        {
            "name": name,
            "version": 1.0,
            "handlerManifest": {
                "installCommand": "install.sh",
                "enableCommand": "enable.sh",
                "disableCommand": "noop.sh",
                "uninstallCommand": "noop.sh",
                "updateCommand": "noop.sh",
            },
        }
    ]
    status = (
        '[{"version": 1.0, "timestampUTC": "2026-01-01T00:00:00Z", "status": {"name": "x",'
        ' "operation": "Enable", "status": "success", "code": 0,'
        ' "formattedMessage": {"lang": "en-US", "message": "' + version + '"}}}]'
    )
    enable_script = (
        "#!/bin/sh\nset -e\n"
        + enable
        + "\n"
        + 'seq=$(ls config | sed -n "s/\\.settings$//p" | sort -n | tail -1)\n'
        + f"printf '%s' '{status}' > status/$seq.status\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("HandlerManifest.json", json.dumps(manifest))
        archive.writestr("install.sh", "#!/bin/sh\nexit 0\n")
        archive.writestr("noop.sh", "#!/bin/sh\nexit 0\n")
        archive.writestr("enable.sh", enable_script)
    return buffer.getvalue()


def version_manifest(*plugins: tuple[str, list[str]]) -> bytes:
    """A PluginVersionManifest listing each (version, [uris])."""
    items = "".join(
        "<Plugin><Version>"
        + version
        + "</Version><Uris>"
        + "".join(f"<Uri>{uri.replace('&', '&amp;')}</Uri>" for uri in uris)
        + "</Uris></Plugin>"
        for version, uris in plugins
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<PluginVersionManifest>'
        f"<Plugins>{items}</Plugins><InternalPlugins/></PluginVersionManifest>"
    ).encode()
