"""Shared by the Application Health tests: real local servers to probe (HTTP, HTTPS with a
throwaway self-signed certificate, a bare TCP listener), the status file a worker keeps
rewriting, and the clean-up of every worker a test started."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from exthandler_plugins.apphealth import ApplicationHealth
from exthandler_sdk._workers import alive
from exthandler_sdk.procs import ProcessIdentity, identify

HANDLER = ApplicationHealth.name
VERSION = ApplicationHealth.version
SECOND = "0.01"
"""One second of the settings in the tests (the handler's test knob): 5 s last 50 ms."""
HEALTHY = {"ApplicationHealthState": "Healthy"}
UNHEALTHY = {"ApplicationHealthState": "Unhealthy"}


@attrs.define
class Answer:
    """What a path answers."""

    code: int = 200
    body: bytes = b""
    headers: dict[str, str] = attrs.field(factory=dict)


def answer(document: Any, code: int = 200) -> Answer:
    return Answer(code=code, body=json.dumps(document).encode())


@attrs.define(eq=False)
class AppServer:
    """An HTTP(S) server on 127.0.0.1 whose answers the test changes as it goes."""

    scheme: str
    port: int = 0
    answers: dict[str, Answer] = attrs.field(factory=dict)
    hits: list[tuple[str, dict[str, str]]] = attrs.field(factory=list)
    # Answers given once each, in order, before `answers` is consulted again.
    script: dict[str, list[Answer]] = attrs.field(factory=dict)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def next_answer(self, path: str) -> Answer:
        with self.lock:
            queued = self.script.get(path)
            if queued:
                return queued.pop(0)
            return self.answers.get(path, Answer(code=404))

    def pending(self, path: str) -> int:
        with self.lock:
            return len(self.script.get(path, []))

    def count(self, path: str) -> int:
        return sum(1 for seen, _ in self.hits if seen == path)


def _request_handler(server: AppServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            reply = server.next_answer(self.path)
            self.send_response(reply.code)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(
    scheme: str = "http", certificate: tuple[Path, Path] | None = None
) -> Iterator[AppServer]:
    """Run an `AppServer` (https with `certificate`, a (cert, key) pair of PEM files)."""
    server = AppServer(scheme=scheme)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _request_handler(server))
    httpd.daemon_threads = True
    if scheme == "https":
        assert certificate is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for `localhost`: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@attrs.define(eq=False)
class Listener:
    """A TCP socket on 127.0.0.1 that, once started, accepts and closes connections; before
    `start()` (bound, not listening) and after `close()` connections to it are refused."""

    sock: socket.socket
    port: int
    accepted: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> Listener:
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5)


def bound() -> Listener:
    """A port held by this process that refuses connections until `start()`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return Listener(sock=sock, port=int(sock.getsockname()[1]))


def listen() -> Listener:
    return bound().start()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the status file and the workers ----------------------------------------------------------


def read_status(path: Path) -> dict[str, Any] | None:
    """Element 0 of a status file (None while there is none)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    first = document[0] if isinstance(document, list) and document else None
    return first if isinstance(first, dict) else None


def health(path: Path) -> tuple[str, str] | None:
    """(AppHealthStatus message, ApplicationHealthState message) of a status file."""
    status = read_status(path)
    if status is None:
        return None
    entries = {s["name"]: s["formattedMessage"]["message"] for s in status["status"]["substatus"]}
    if "AppHealthStatus" not in entries:
        return None
    return entries["AppHealthStatus"], entries["ApplicationHealthState"]


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def wait_state(path: Path, state: str, timeout: float = 120.0) -> tuple[str, str]:
    """Wait until the status file at `path` reports `state`; its two substatus texts."""
    wait_for(lambda: (health(path) or ("", ""))[1] == state, timeout, f"{state} in {path}")
    found = health(path)
    assert found is not None
    return found


def worker_records(root: Path) -> list[Path]:
    return sorted(root.rglob(".exthandler-sdk*.worker-*.pid"))


def worker_identity(record: Path) -> ProcessIdentity | None:
    return ProcessIdentity.parse(record.read_bytes()) if record.exists() else None


def running(identity: ProcessIdentity | None) -> bool:
    return identity is not None and alive(identity)


def pid_running(pid: int) -> bool:
    return running(identify(pid))


def kill_workers(root: Path) -> None:
    """Kill the process group of every worker recorded below `root` (test clean-up)."""
    for record in worker_records(root):
        identity = worker_identity(record)
        if running(identity):
            assert identity is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(identity.pid, signal.SIGKILL)
