"""exthandler_sdk.blob: block, page and append blobs on real Azurite, request details and
failures on a recording stdlib server, and redaction of every credential."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from exthandler_sdk import blob
from exthandler_sdk.blob import BlobError

from tests.sdk.put_server import Answer, PutServer, put_server
from tests.servers import Azurite, unique_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cr3tSignatureValue%2Bx%3D"
SAS = f"sv=2019-12-12&se=2099-01-01T00%3A00%3A00Z&sp=rw&sig={SECRET}"


@pytest.fixture
def server() -> Iterator[PutServer]:
    with put_server() as running:
        yield running


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = unique_name("blob")
    azurite.create_container(name)
    return name


# -- real Azurite -------------------------------------------------------------------------


def test_block_blob_is_written_and_replaced(azurite: Azurite, container: str) -> None:
    url = azurite.url(container, "dir/status.json")
    result = blob.put_block_blob(url, b'{"a": 1}', content_type="application/json")
    assert (result.status, result.requests) == (201, 1)
    assert result.etag
    blob.put_block_blob(url, b"second")
    data, headers = azurite.get_blob(container, "dir/status.json")
    assert data == b"second"
    assert headers["x-ms-blob-type"] == "BlockBlob"


def test_page_blob_is_rounded_to_pages_and_padded(azurite: Azurite, container: str) -> None:
    url = azurite.url(container, "status.page")
    content = bytes(range(256)) * 3  # 768 bytes: two pages
    result = blob.put_page_blob(url, content)
    assert result.requests == 2
    data, headers = azurite.get_blob(container, "status.page")
    assert headers["x-ms-blob-type"] == "PageBlob"
    assert data == content + b"\0" * 256
    # A shorter document replaces the longer one entirely.
    blob.put_page_blob(url, b"short")
    data, _ = azurite.get_blob(container, "status.page")
    assert data == b"short" + b"\0" * 507


def test_page_blob_over_one_write_takes_several(azurite: Azurite, container: str) -> None:
    url = azurite.url(container, "big.page")
    content = b"x" * blob.PAGE_WRITE_LIMIT + b"tail"
    result = blob.put_page_blob(url, content)
    assert result.requests == 3
    data, _ = azurite.get_blob(container, "big.page")
    assert data == content + b"\0" * 508


def test_append_blob_grows(azurite: Azurite, container: str) -> None:
    url = azurite.url(container, "out.txt")
    blob.put_append_blob(url, b"one\n", content_type="text/plain")
    blob.append_block(url, b"two\n")
    assert blob.append_block(url, b"").requests == 0
    data, headers = azurite.get_blob(container, "out.txt")
    assert headers["x-ms-blob-type"] == "AppendBlob"
    assert data == b"one\ntwo\n"
    # Creating again starts over.
    blob.create_append_blob(url)
    assert azurite.get_blob(container, "out.txt")[0] == b""


def test_put_blob_chooses_by_type(azurite: Azurite, container: str) -> None:
    for kind in ("BlockBlob", "pageblob", "AppendBlob"):
        blob.put_blob(azurite.url(container, kind), b"x", kind)
        assert azurite.get_blob(container, kind)[1]["x-ms-blob-type"].lower() == kind.lower()
    with pytest.raises(BlobError, match="unknown blob type 'Folder'"):
        blob.put_blob(azurite.url(container, "f"), b"x", "Folder")


def test_a_rejected_signature_is_reported_without_it(azurite: Azurite, container: str) -> None:
    url = azurite.url(container, "denied").replace("sig=", "sig=AAAA")
    signature = url.partition("sig=")[2].partition("&")[0]
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(url, b"x")
    error = caught.value
    assert error.status == 403
    assert error.error_code in ("AuthenticationFailed", "AuthorizationFailure")
    assert not error.retryable
    assert "sig=<redacted>" in str(error)
    assert signature not in str(error)
    assert "AAAA" not in str(error)


def test_a_missing_container_is_not_retryable(azurite: Azurite) -> None:
    with pytest.raises(BlobError) as caught:
        blob.put_page_blob(azurite.url(unique_name("missing"), "b"), b"x")
    assert (caught.value.status, caught.value.error_code) == (404, "ContainerNotFound")
    assert "create page blob: HTTP 404 ContainerNotFound" in str(caught.value)


# -- what goes over the wire --------------------------------------------------------------


def test_page_writes_carry_ranges_and_headers(server: PutServer) -> None:
    content = b"y" * blob.PAGE_WRITE_LIMIT + b"z"
    blob.put_page_blob(server.url(f"/c/b?{SAS}"), content)
    create, first, second = server.seen
    assert create.path == f"/c/b?{SAS}"
    assert create.headers["x-ms-blob-type"] == "PageBlob"
    assert create.headers["x-ms-blob-content-length"] == str(blob.PAGE_WRITE_LIMIT + 512)
    assert create.headers["x-ms-version"] == blob.API_VERSION
    assert create.headers["x-ms-date"].endswith(" GMT")
    assert create.body == b""
    assert first.path == f"/c/b?{SAS}&comp=page"
    assert first.headers["x-ms-range"] == f"bytes=0-{blob.PAGE_WRITE_LIMIT - 1}"
    assert first.headers["x-ms-page-write"] == "update"
    assert second.headers["x-ms-range"] == (
        f"bytes={blob.PAGE_WRITE_LIMIT}-{blob.PAGE_WRITE_LIMIT + 511}"
    )
    assert second.body == b"z" + b"\0" * 511


def test_appends_are_split_into_blocks(server: PutServer) -> None:
    blob.append_block(server.url("/c/b"), b"a" * (blob.APPEND_BLOCK_LIMIT + 1))
    assert [s.path for s in server.seen] == ["/c/b?comp=appendblock"] * 2
    assert [len(s.body) for s in server.seen] == [blob.APPEND_BLOCK_LIMIT, 1]


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [(Answer(500), True), (Answer(503), True), (Answer(429), True), (Answer(400), False)],
)
def test_failures_say_whether_to_retry(server: PutServer, answer: Answer, retryable: bool) -> None:
    server.default = answer
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(server.url(f"/c/b?{SAS}"), b"x")
    assert caught.value.status == answer.status
    assert caught.value.retryable is retryable
    assert f"HTTP {answer.status}" in str(caught.value)


def test_an_unexpected_success_is_a_failure(server: PutServer) -> None:
    server.default = Answer(200)
    with pytest.raises(BlobError, match="HTTP 200, expected 201"):
        blob.put_block_blob(server.url("/c/b"), b"x")


def test_redirects_are_not_followed(server: PutServer) -> None:
    server.default = Answer(307, {"Location": server.url("/elsewhere")})
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(server.url(f"/c/b?{SAS}"), b"x")
    assert caught.value.status == 307
    assert [s.path.split("?")[0] for s in server.seen] == ["/c/b"]


def test_a_server_that_never_answers_times_out(server: PutServer) -> None:
    server.default = Answer(0)
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(server.url(f"/c/b?{SAS}"), b"x", timeout=0.5)
    assert caught.value.retryable
    assert caught.value.status is None
    assert "no answer within 0.5 s" in str(caught.value)


def test_an_error_body_echoing_the_url_is_cut_and_scrubbed(server: PutServer) -> None:
    url = server.url(f"/c/b?{SAS}")
    echo = f"<Error><Code>Nope {url} {SECRET}</Code></Error>".encode()
    server.default = Answer(500, body=echo + b"x" * (2 * blob.RESPONSE_LIMIT))
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(url, b"x")
    message = str(caught.value)
    assert "Nope" in message
    assert SECRET not in message
    assert "S3cr3tSignatureValue" not in message
    assert len(message) < 1000


def test_nothing_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BlobError) as caught:
        blob.put_block_blob(f"http://user:pw1234@127.0.0.1:{port}/c/b?{SAS}", b"x")
    assert caught.value.retryable
    assert SECRET not in str(caught.value)
    assert "pw1234" not in str(caught.value)


def test_only_http_urls_are_written() -> None:
    with pytest.raises(BlobError, match=r"^file:///c/b\?sig=<redacted>: not an http"):
        blob.put_block_blob(f"file:///c/b?sig={SECRET}", b"x")


# -- redaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://a.blob.core.windows.net/c/b?{SAS}",
            "https://a.blob.core.windows.net/c/b?sv=2019-12-12&se=2099-01-01T00%3A00%3A00Z"
            "&sp=rw&sig=<redacted>",
        ),
        ("https://h/p?X-Amz-Signature=abc&X-Amz-Credential=k", None),
        ("https://user:password@h:8443/p", "https://<redacted>@h:8443/p"),
        ("https://h/p", "https://h/p"),
        ("https://h/p?token", "https://h/p?<redacted>"),
        ("http://[::1]:80/x?comp=page&sig=1", "http://[::1]:80/x?comp=page&sig=<redacted>"),
        ("http://[::1/x?sig=1", "http://[::1/x?<redacted>"),
    ],
)
def test_redact_url(url: str, expected: str | None) -> None:
    redacted = blob.redact_url(url)
    if expected is not None:
        assert redacted == expected
    assert "abc" not in redacted
    assert "password" not in redacted
    assert "S3cr3t" not in redacted


def test_redacting_twice_changes_nothing() -> None:
    once = blob.redact_text(f"PUT https://h/c?sv=1&sig={SECRET} failed")
    assert blob.redact_text(once) == once == "PUT https://h/c?sv=1&sig=<redacted> failed"
    shown = f"{blob.redact_url(f'https://h/c?sig={SECRET}')}: failed"
    assert blob.redact_text(shown) == shown == "https://h/c?sig=<redacted>: failed"


def test_redact_text_finds_urls_in_prose() -> None:
    text = f"failed: 'https://h/c?sig={SECRET}' then http://x/y?sig=Z2Z2"
    assert blob.redact_text(text) == (
        "failed: 'https://h/c?sig=<redacted>' then http://x/y?sig=<redacted>"
    )


@pytest.mark.parametrize(
    ("url", "sas"),
    [
        (f"https://a.blob.core.windows.net/c/b?{SAS}", True),
        ("http://127.0.0.1:10000/devstoreaccount1/c/b?sig=1&SV=2", True),
        ("https://h/b?sig=1", False),
        ("https://h/b", False),
        ("s3://bucket/key?sv=1&sig=2", False),
    ],
)
def test_is_sas_url(url: str, sas: bool) -> None:
    assert blob.is_sas_url(url) is sas


def test_the_module_needs_only_the_standard_library() -> None:
    # -S: no site-packages, so attrs, anyio and the rest cannot be imported.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import exthandler_sdk.blob as b; "
        "print(b.redact_url('https://h/p?sig=x'))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(REPO_ROOT / "sdk")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "https://h/p?sig=<redacted>"
