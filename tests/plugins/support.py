"""Shared by the CustomScript tests: a real HTTP server on 127.0.0.1 with scripted answers
per path, and a runtime that runs CustomScript in process."""

from __future__ import annotations

import contextlib
import http.server
import json
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
from exthandler_plugins.customscript import CustomScript, DownloadPolicy

from exthandler import InstanceView, RuntimeConfig, open_runtime, parse_goal_state

FAST = DownloadPolicy(attempts=4, backoff=0.01, max_backoff=0.05, deadline=10.0)
BACKENDS = ("asyncio", "trio")
"""The anyio backends a host may run the runtime, and so CustomScript in process, on."""


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


def handler_class(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    """The request handler serving `server.routes` and recording `server.requests`."""

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


HANDLER = "Microsoft.Azure.Extensions.CustomScript"
DIR = f"{HANDLER}-2.1.0"


def goal(settings: dict[str, Any], protected: dict[str, Any] | None = None, **extra: Any) -> Any:
    extension: dict[str, Any] = {
        "name": "cse",
        "publisher": "Microsoft.Azure.Extensions",
        "type": "CustomScript",
        "typeHandlerVersion": "2.1",
        "settings": settings,
        **extra,
    }
    if protected is not None:
        extension["protectedSettings"] = protected
    return parse_goal_state(json.dumps({"extensions": [extension]}))


def apply(state: Path, document: Any, backend: str = "asyncio", **options: Any) -> InstanceView:
    """Apply `document` with a runtime on `backend`, and wait for a final status."""
    options.setdefault("handlers", [CustomScript])
    config = RuntimeConfig(state_dir=state, load_entry_points=False, **options)

    async def main() -> InstanceView:
        async with open_runtime(config) as runtime:
            view = await runtime.apply(document)
            deadline = time.monotonic() + 30
            while (
                view.extensions
                and view.extensions[0].statuses[0].level == "Info"
                and (view.extensions[0].statuses[0].code.endswith("transitioning"))
            ):
                assert time.monotonic() < deadline, view
                await anyio.sleep(0.1)
                view = await runtime.refresh()
            return view

    return anyio.run(main, backend=backend)


def status(view: InstanceView) -> tuple[str, str]:
    entry = view.extensions[0].statuses[0]
    return entry.code, entry.message


def subs(view: InstanceView) -> dict[str, tuple[str, str]]:
    return {s.code.split("/")[1]: (s.code, s.message) for s in view.extensions[0].substatuses}
