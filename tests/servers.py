"""Real storage servers for tests: Azurite (the Azure Storage emulator) and moto's S3 server.

Both listen on 127.0.0.1 at a free port and keep everything in memory. One of each is
started per test session (see the `azurite` and `moto_s3` fixtures in tests/conftest.py);
tests isolate themselves by using their own container or bucket names (`unique_name`).

Azurite comes from the npm registry. `.ci/run` installs it under `.ci/node`; elsewhere set
`$EXTHANDLER_AZURITE` to an `azurite-blob` executable or put one on PATH. moto is a dev
dependency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The emulator's well-known development account (published with Azurite itself).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SAS_VERSION = "2019-12-12"

_names = itertools.count()


def unique_name(prefix: str) -> str:
    """A container or bucket name no other test of this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
    """Block until something accepts connections on 127.0.0.1:port (a start-up wait, not a
    timed assertion: the bound is generous for a loaded machine)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def azurite_executable() -> str | None:
    """Where `azurite-blob` is, or None when it is not installed here."""
    explicit = os.environ.get("EXTHANDLER_AZURITE")
    if explicit:
        return explicit
    bundled = REPO_ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
    if bundled.exists():
        return str(bundled)
    return shutil.which("azurite-blob")


class Azurite:
    """A running Azurite blob service and the requests tests need to prepare it."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self._log = open(workdir / "azurite.log", "wb")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            [
                executable,
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self._process, "azurite-blob")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    # -- shared access signatures ------------------------------------------------------

    def account_sas(
        self, permissions: str = "rwdlacup", expiry: str = "2099-01-01T00:00:00Z"
    ) -> str:
        """An account SAS query string (no leading '?') for blob containers and objects."""
        fields = {
            "sv": SAS_VERSION,
            "ss": "b",
            "srt": "sco",
            "sp": permissions,
            "se": expiry,
            "spr": "https,http",
        }
        to_sign = "\n".join(
            [
                AZURITE_ACCOUNT,
                fields["sp"],
                fields["ss"],
                fields["srt"],
                "",
                fields["se"],
                "",
                fields["spr"],
                fields["sv"],
                "",
            ]
        )
        digest = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256)
        fields["sig"] = base64.b64encode(digest.digest()).decode()
        return urllib.parse.urlencode(fields)

    def url(self, container: str, blob: str = "", *, sas: bool = True) -> str:
        """The URL of a container or blob, with an account SAS unless `sas` is False."""
        path = f"{self.endpoint}/{container}"
        if blob:
            path += "/" + urllib.parse.quote(blob)
        return f"{path}?{self.account_sas()}" if sas else path

    # -- preparing and inspecting blobs ------------------------------------------------

    def create_container(self, container: str) -> None:
        _request("PUT", f"{self.endpoint}/{container}?restype=container&{self.account_sas()}")

    def put_blob(self, container: str, blob: str, data: bytes) -> None:
        _request("PUT", self.url(container, blob), data, {"x-ms-blob-type": "BlockBlob"})

    def get_blob(self, container: str, blob: str) -> tuple[bytes, Mapping[str, str]]:
        """The blob's bytes and its response headers (`x-ms-blob-type`, `ETag`...)."""
        return _request("GET", self.url(container, blob))

    def delete_blob(self, container: str, blob: str) -> None:
        _request("DELETE", self.url(container, blob))


def _request(
    method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[bytes, Mapping[str, str]]:
    all_headers = {"x-ms-version": SAS_VERSION, **(headers or {})}
    if data is not None:
        all_headers["Content-Length"] = str(len(data))
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), dict(response.headers.items())


class MotoS3:
    """moto's S3 API in server mode, in a thread of the test process."""

    region = "us-east-1"
    access_key = "testing-access-key"
    secret_key = "testing-secret-key"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port, None, "moto server")

    def stop(self) -> None:
        self._server.stop()

    def environment(self) -> dict[str, str]:
        """The AWS_* variables that point an S3 client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):  # type: ignore[no-untyped-def]  # boto3's client type is dynamic
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
