"""The remote-access layer: locations, redaction, and reads, lists and writes against real
servers (Azurite, moto's S3, a stdlib HTTP server with faults, local files)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exthandler._remote import (
    NOT_MODIFIED,
    Fetched,
    RemoteError,
    download,
    list_names,
    parse_location,
    read,
    redact,
    redact_text,
    write,
)
from tests.fleet.sources_support import Fault, FileServer
from tests.servers import AZURITE_ACCOUNT, Azurite, MotoS3, unique_name

pytestmark = pytest.mark.anyio


@pytest.fixture
def s3_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    for name, value in moto_s3.environment().items():
        monkeypatch.setenv(name, value)
    return moto_s3


# -- locations and redaction -------------------------------------------------------------


def test_redact_hides_sas_signature_and_other_credentials() -> None:
    url = (
        "https://acct.blob.core.windows.net/c/b.zip?sv=2020-08-04&sr=b&sig=SECRETSIG%3D"
        "&se=2030-01-01&X-Amz-Signature=abc&token=t0k&plain=visible"
    )
    shown = redact(url)
    assert "SECRETSIG" not in shown
    assert "abc" not in shown
    assert "t0k" not in shown
    assert "sv=2020-08-04" in shown
    assert "plain=visible" in shown
    assert "sig=***" in shown


def test_redact_hides_userinfo() -> None:
    assert redact("https://user:pa55@example.test/x") == "https://***@example.test/x"
    text = "GET https://user:pa55@example.test/x?sig=zzz failed"
    assert "pa55" not in redact_text(text)
    assert "zzz" not in redact_text(text)


def test_locations_of_each_kind() -> None:
    assert parse_location("/srv/goal.json").path == Path("/srv/goal.json")
    assert parse_location("file:///srv/goal.json").path == Path("/srv/goal.json")
    s3 = parse_location("s3://bucket/a/b.json")
    assert (s3.kind, s3.bucket, s3.key) == ("s3", "bucket", "a/b.json")
    gs = parse_location("gs://bucket/a")
    assert (gs.kind, gs.bucket, gs.key) == ("gs", "bucket", "a")
    az = parse_location("az://container/dir/blob")
    assert (az.kind, az.bucket, az.key, az.account) == ("azure", "container", "dir/blob", None)
    assert parse_location("https://example.test/goal.json").kind == "http"


def test_azure_sas_urls_name_their_account() -> None:
    cloud = parse_location("https://myacct.blob.core.windows.net/cont/a/b.zip?sv=1&sig=x")
    assert (cloud.kind, cloud.account, cloud.bucket, cloud.key) == (
        "azure",
        "myacct",
        "cont",
        "a/b.zip",
    )
    assert cloud.endpoint == "https://myacct.blob.core.windows.net"
    emulator = parse_location("http://127.0.0.1:10000/devstoreaccount1/cont/blob?sv=1&sig=x")
    assert (emulator.account, emulator.bucket, emulator.key) == ("devstoreaccount1", "cont", "blob")
    assert emulator.endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert "x" not in str(emulator).split("sig=")[1]


def test_child_keeps_the_sas_query() -> None:
    base = parse_location("http://127.0.0.1:1/acct/cont/pkgs?sv=1&sig=s")
    child = base.child("A.B__1.0.zip")
    assert child.key == "pkgs/A.B__1.0.zip"
    assert child.url == "http://127.0.0.1:1/acct/cont/pkgs/A.B__1.0.zip?sv=1&sig=s"
    assert child.with_suffix_name(".sha256").key == "pkgs/A.B__1.0.zip.sha256"


def test_unsupported_scheme_is_refused_without_credentials() -> None:
    with pytest.raises(ValueError, match="unsupported scheme") as info:
        parse_location("ftp://u:secret@host/x")
    assert "secret" not in str(info.value)


def test_importing_the_layer_loads_no_network_client() -> None:
    code = (
        "import sys, exthandler._remote as r; r.parse_location('s3://b/k');"
        "print(sorted(m for m in ('obstore', 'httpx', 'anyio', 'exthandler._remote._io')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["status", "--state-dir", "/nonexistent"], ["validate", "GOAL"]],
)
def test_quick_commands_load_no_network_client(argv: list[str], tmp_path: Path) -> None:
    goal = tmp_path / "goal.json"
    goal.write_text('{"extensions": []}')
    argv = [str(goal) if arg == "GOAL" else arg for arg in argv]
    code = (
        "import sys\nfrom exthandler._cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('obstore', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- plain HTTP ----------------------------------------------------------------------------


async def test_http_conditional_read(http: FileServer) -> None:
    http.files["/g.json"] = b'{"extensions": []}'
    first = await read(http.url("/g.json"))
    assert isinstance(first, Fetched)
    assert first.data == b'{"extensions": []}'
    assert first.tag is not None
    assert await read(http.url("/g.json"), etag=first.tag) is NOT_MODIFIED
    assert http.requests[-1].status == 304
    assert http.requests[-1].headers["If-None-Match"] == first.tag
    http.files["/g.json"] = b'{"extensions": [], "id": "2"}'
    second = await read(http.url("/g.json"), etag=first.tag)
    assert isinstance(second, Fetched)
    assert second.data.endswith(b'"2"}')


async def test_http_errors_are_redacted(http: FileServer) -> None:
    http.faults["/g.json"] = Fault(status=500)
    with pytest.raises(RemoteError) as info:
        await read(http.url("/g.json") + "?x=1&token=TOPSECRET")
    assert "HTTP 500" in info.value.message
    assert "TOPSECRET" not in info.value.message
    with pytest.raises(RemoteError) as missing:
        await read(http.url("/nothing"))
    assert missing.value.missing


async def test_http_request_logs_never_carry_credentials(
    http: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # a host application that logs everything, httpx too
    http.files["/g.json"] = b"{}"
    await read(http.url("/g.json") + "?sv=1&sig=TOPSECRET")
    assert "/g.json" in caplog.text  # httpx did log the request
    assert "TOPSECRET" not in caplog.text


async def test_http_truncated_and_wrong_length_bodies_fail(http: FileServer) -> None:
    http.files["/t"] = b"x" * 1000
    http.faults["/t"] = Fault(truncate=10)
    with pytest.raises(RemoteError):
        await read(http.url("/t"))
    http.files["/w"] = b"y" * 100
    http.faults["/w"] = Fault(length=200)
    with pytest.raises(RemoteError):
        await read(http.url("/w"))
    # A length shorter than the body is all HTTP/1.1 lets a client see: the bytes past
    # it are never read (a package's digest is what catches such a body).
    http.faults["/w"] = Fault(length=50)
    short = await read(http.url("/w"))
    assert isinstance(short, Fetched)
    assert short.data == b"y" * 50


async def test_http_follows_redirects(http: FileServer) -> None:
    http.files["/real"] = b"content"
    http.faults["/moved"] = Fault(redirect=http.url("/real"))
    fetched = await read(http.url("/moved"))
    assert isinstance(fetched, Fetched)
    assert fetched.data == b"content"
    http.faults["/loop"] = Fault(redirect=http.url("/loop"))
    with pytest.raises(RemoteError, match="redirects"):
        await read(http.url("/loop"))


async def test_http_slow_response_times_out(http: FileServer) -> None:
    http.files["/slow"] = b"late"
    http.faults["/slow"] = Fault(stall=2.0)
    with pytest.raises(RemoteError, match="timed out"):
        await read(http.url("/slow"), io_timeout=0.2)


async def test_http_read_is_capped(http: FileServer) -> None:
    http.files["/big"] = b"z" * 5000
    with pytest.raises(RemoteError, match="larger than 100 bytes"):
        await read(http.url("/big"), limit=100)


async def test_http_lists_through_index_json(http: FileServer) -> None:
    http.files["/repo/index.json"] = b'["A.B__1.0.zip", "A.B__1.0.zip.sha256", "sub/x"]'
    assert await list_names(http.url("/repo")) == ["A.B__1.0.zip", "A.B__1.0.zip.sha256"]
    http.files["/bad/index.json"] = b'{"files": 1}'
    with pytest.raises(RemoteError, match=r"index\.json: not a JSON array"):
        await list_names(http.url("/bad/"))


async def test_http_write_puts(http: FileServer, tmp_path: Path) -> None:
    await write(http.url("/status/vm1.json"), b"{}")
    assert http.files["/status/vm1.json"] == b"{}"
    http.files["/pkg.zip"] = b"PK" * 100
    result = await download(http.url("/pkg.zip"), tmp_path / "pkg.zip", limit=1000)
    assert result.size == 200
    assert (tmp_path / "pkg.zip").read_bytes() == b"PK" * 100


# -- Azurite ---------------------------------------------------------------------------------


async def test_azurite_with_sas_reads_conditionally_lists_and_writes(azurite: Azurite) -> None:
    container = unique_name("src")
    azurite.create_container(container)
    azurite.put_blob(container, "goals/vm1.json", b'{"extensions": []}')
    url = azurite.url(container, "goals/vm1.json")
    location = parse_location(url)
    assert (location.kind, location.account) == ("azure", AZURITE_ACCOUNT)
    first = await read(url)
    assert isinstance(first, Fetched)
    assert first.data == b'{"extensions": []}'
    assert await read(url, etag=first.tag) is NOT_MODIFIED
    await write(azurite.url(container, "goals/vm2.json"), b"{}")
    assert await list_names(azurite.url(container, "goals")) == ["vm1.json", "vm2.json"]
    assert azurite.get_blob(container, "goals/vm2.json")[0] == b"{}"
    with pytest.raises(RemoteError) as info:
        await read(azurite.url(container, "goals/none.json"))
    assert info.value.missing
    assert "sig=***" in info.value.message
    assert azurite.account_sas().split("sig=")[1][:8] not in info.value.message


async def test_azure_scheme_takes_the_account_from_the_environment(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = unique_name("env")
    azurite.create_container(container)
    azurite.put_blob(container, "g.json", b"{}")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_SAS_KEY", azurite.account_sas())
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", azurite.endpoint)
    fetched = await read(f"az://{container}/g.json")
    assert isinstance(fetched, Fetched)
    assert fetched.data == b"{}"


# -- moto S3 ---------------------------------------------------------------------------------


async def test_s3_reads_conditionally_lists_and_writes(s3_env: MotoS3, tmp_path: Path) -> None:
    bucket = unique_name("src")
    client = s3_env.client()  # type: ignore[no-untyped-call]
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="goals/vm1.json", Body=b"one")
    first = await read(f"s3://{bucket}/goals/vm1.json")
    assert isinstance(first, Fetched)
    assert first.data == b"one"
    assert await read(f"s3://{bucket}/goals/vm1.json", etag=first.tag) is NOT_MODIFIED
    client.put_object(Bucket=bucket, Key="goals/vm1.json", Body=b"two")
    second = await read(f"s3://{bucket}/goals/vm1.json", etag=first.tag)
    assert isinstance(second, Fetched)
    assert second.data == b"two"
    await write(f"s3://{bucket}/goals/vm2.json", b"three")
    assert await list_names(f"s3://{bucket}/goals/") == ["vm1.json", "vm2.json"]
    assert client.get_object(Bucket=bucket, Key="goals/vm2.json")["Body"].read() == b"three"
    done = await download(f"s3://{bucket}/goals/vm2.json", tmp_path / "x", limit=10)
    assert done.size == 5
    with pytest.raises(RemoteError, match="larger than 2 bytes"):
        await download(f"s3://{bucket}/goals/vm2.json", tmp_path / "y", limit=2)
    assert not (tmp_path / "y").exists()
    assert sorted(os.listdir(tmp_path)) == ["x"]


async def test_s3_missing_bucket_is_an_error(s3_env: MotoS3) -> None:
    with pytest.raises(RemoteError):
        await read(f"s3://{unique_name('none')}/g.json")


# -- local files -----------------------------------------------------------------------------


async def test_local_files(tmp_path: Path) -> None:
    goal = tmp_path / "g.json"
    goal.write_bytes(b"{}")
    first = await read(os.fspath(goal))
    assert isinstance(first, Fetched)
    assert await read(goal.as_uri(), etag=first.tag) is NOT_MODIFIED
    await write(os.fspath(tmp_path / "out.json"), b"[]")
    assert await list_names(tmp_path.as_uri()) == ["g.json", "out.json"]
    with pytest.raises(RemoteError) as info:
        await read(os.fspath(tmp_path / "none"))
    assert info.value.missing
