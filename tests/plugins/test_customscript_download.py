"""Downloads against a real HTTP server on 127.0.0.1: retries, failures, deadline, checksums."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import attrs
import pytest
from exthandler_plugins._shared.download import FileSource, StorageAccount, download_all, shared_key
from exthandler_plugins.customscript import DownloadPolicy
from exthandler_sdk import HandlerError

from tests.plugins.support import FAST, FileServer, Route

SAS = "sv=2022-11-02&sig=TopSecretSignature%3D"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Downloads run on the backend of the process (packaged) or the host (in process)."""
    return str(request.param)


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger(f"test.customscript.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [Records()]
    return logger


def lines(log: logging.Logger) -> list[str]:
    handler = log.handlers[0]
    assert isinstance(handler, Records)
    return handler.lines


async def fetch(
    sources: list[FileSource],
    directory: Path,
    log: logging.Logger,
    policy: DownloadPolicy = FAST,
    storage: StorageAccount | None = None,
) -> None:
    await download_all(sources, directory, policy=policy, storage=storage, log=log)


def partials(directory: Path) -> list[Path]:
    """What a download left half-written in `directory`."""
    return list(directory.glob("*.part"))


def source(server: FileServer, path: str, sha256: str | None = None) -> FileSource:
    return FileSource(url=server.url(f"{path}?{SAS}"), name=path.rpartition("/")[2], sha256=sha256)


@pytest.mark.anyio
async def test_retries_500_and_429_then_succeeds(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    file_server.routes["/a.sh"] = Route(body=b"echo a\n", failures=[500, 503])
    file_server.routes["/b.sh"] = Route(
        body=b"echo b\n", failures=[429, 408], headers={"Retry-After": "0"}
    )
    await fetch([source(file_server, "/a.sh"), source(file_server, "/b.sh")], tmp_path, log)
    assert (tmp_path / "a.sh").read_bytes() == b"echo a\n"
    assert (tmp_path / "b.sh").read_bytes() == b"echo b\n"
    assert (tmp_path / "a.sh").stat().st_mode & 0o777 == 0o700
    assert file_server.hits("/a.sh") == 3
    assert file_server.hits("/b.sh") == 3
    assert any("HTTP 500 (attempt 1 of 4); retrying" in line for line in lines(log))
    assert any("HTTP 429" in line for line in lines(log))
    assert not any("TopSecret" in line for line in lines(log))
    assert not partials(tmp_path)


@pytest.mark.anyio
async def test_gives_up_after_the_attempts(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    file_server.routes["/a.sh"] = Route(body=b"x", failures=[500] * 10)
    with pytest.raises(HandlerError) as caught:
        await fetch([source(file_server, "/a.sh")], tmp_path, log)
    assert caught.value.code == 1
    assert caught.value.message == (
        f"{file_server.url('/a.sh')}?<redacted>: HTTP 500; gave up after 4 attempts"
    )
    assert file_server.hits("/a.sh") == 4


@pytest.mark.anyio
async def test_404_is_permanent(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    with pytest.raises(HandlerError) as caught:
        await fetch([source(file_server, "/missing.sh")], tmp_path, log)
    assert "HTTP 404 (not retried)" in caught.value.message
    assert "TopSecret" not in caught.value.message
    assert file_server.hits("/missing.sh") == 1


@pytest.mark.anyio
async def test_the_deadline_covers_all_downloads(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    file_server.routes["/slow.sh"] = Route(body=b"x", delay=2.0)
    policy = attrs.evolve(FAST, deadline=0.3)
    with pytest.raises(HandlerError) as caught:
        await fetch([source(file_server, "/slow.sh")], tmp_path, log, policy)
    message = caught.value.message
    assert message.startswith("downloads did not finish within 0.3 s while fetching http://")
    assert "slow.sh?<redacted>" in message
    assert "TopSecret" not in message


@pytest.mark.anyio
async def test_read_timeouts_and_refused_connections_are_transient(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    file_server.routes["/slow.sh"] = Route(body=b"x", delay=1.0)
    policy = attrs.evolve(FAST, attempts=2, read_timeout=0.1)
    with pytest.raises(HandlerError) as caught:
        await fetch([source(file_server, "/slow.sh")], tmp_path, log, policy)
    assert "timed out (ReadTimeout); gave up after 2 attempts" in caught.value.message
    closed = FileSource(url=f"http://127.0.0.1:1/x.sh?{SAS}", name="x.sh")
    with pytest.raises(HandlerError) as caught:
        await fetch([closed], tmp_path, log, policy)
    assert "ConnectError" in caught.value.message
    assert "TopSecret" not in caught.value.message
    assert not any("TopSecret" in line for line in lines(log))


@pytest.mark.anyio
async def test_sha256_is_checked(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    body = b"payload"
    good = hashlib.sha256(body).hexdigest()
    file_server.routes["/good.bin"] = Route(body=body)
    file_server.routes["/bad.bin"] = Route(body=b"tampered")
    await fetch([source(file_server, "/good.bin", good)], tmp_path, log)
    assert (tmp_path / "good.bin").read_bytes() == body
    with pytest.raises(HandlerError) as caught:
        await fetch([source(file_server, "/bad.bin", good)], tmp_path, log)
    assert f"sha256 mismatch: expected {good}, got " in caught.value.message
    assert file_server.hits("/bad.bin") == 1
    assert not (tmp_path / "bad.bin").exists()
    assert not partials(tmp_path)


@pytest.mark.anyio
async def test_file_urls(tmp_path: Path, log: logging.Logger) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "data.txt").write_bytes(b"local")
    target = tmp_path / "target"
    target.mkdir()
    digest = hashlib.sha256(b"local").hexdigest()
    await fetch(
        [FileSource(url=(origin / "data.txt").as_uri(), name="data.txt", sha256=digest)],
        target,
        log,
    )
    assert (target / "data.txt").read_bytes() == b"local"
    with pytest.raises(HandlerError) as caught:
        await fetch([FileSource(url=(origin / "nope").as_uri(), name="nope")], target, log)
    assert "cannot read" in caught.value.message
    with pytest.raises(HandlerError) as caught:
        await fetch(
            [FileSource(url=(origin / "data.txt").as_uri(), name="x", sha256="0" * 64)], target, log
        )
    assert "sha256 mismatch" in caught.value.message


@pytest.mark.anyio
async def test_requests_are_signed_with_the_storage_account_key(
    file_server: FileServer, tmp_path: Path, log: logging.Logger
) -> None:
    file_server.routes["/container/blob.sh"] = Route(body=b"echo blob\n")
    account = StorageAccount(name="acct", key=b"0123456789abcdef")
    url = file_server.url("/container/blob.sh")
    await fetch([FileSource(url=url, name="blob.sh")], tmp_path, log, storage=account)
    _, headers = file_server.requests[-1]
    assert headers["x-ms-version"] == "2020-10-02"
    assert headers["x-ms-date"].endswith(" GMT")
    expected = shared_key(
        account,
        url,
        {"x-ms-date": headers["x-ms-date"], "x-ms-version": headers["x-ms-version"]},
    )
    assert headers["authorization"] == expected
    assert expected.startswith("SharedKey acct:")


def test_other_hosts_are_not_signed() -> None:
    from exthandler_plugins._shared.download import _headers

    account = StorageAccount(name="acct", key=b"k")
    assert "Authorization" not in _headers("https://example.com/a", account)
    assert "Authorization" in _headers("https://acct.blob.core.windows.net/c/a", account)
    assert "Authorization" in _headers("http://localhost:10000/acct/c/a", account)
    assert "Authorization" not in _headers("https://example.com/a", None)


def test_the_http_librarys_own_logs_never_show_a_sas_token(
    tmp_path: Path, file_server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs every request URL at INFO: with logging on, the token must not appear."""
    import logging

    from exthandler_plugins._shared.redact import protect_http_logs

    protect_http_logs()
    protect_http_logs()  # idempotent: one filter per logger
    assert len(logging.getLogger("httpx").filters) == 1
    file_server.routes["/s.sh"] = Route(body=b"echo s\n")
    url = file_server.url("/s.sh") + "?sv=2024&sig=TOPSECRETSIG"
    with caplog.at_level(logging.DEBUG, logger="httpx"):
        import httpx

        httpx.get(url)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/s.sh" in logged
    assert "TOPSECRETSIG" not in logged
