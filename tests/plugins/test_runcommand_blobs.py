"""Run Command uploads the script's stdout and stderr to `outputBlobUri`/`errorBlobUri`
with the SDK's blob writer, against a real Azurite: an append blob, a block blob when the
store refuses that, and a failure named in the status without the SAS token."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from exthandler_plugins.runcommand import RunCommand, _upload
from exthandler_plugins.runcommand._settings import BlobTarget
from exthandler_sdk import blob

from exthandler.testing import Agent
from tests.servers import Azurite, unique_name


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = unique_name("rc")
    azurite.create_container(name)
    return name


def rc(name: str, settings: dict[str, Any], protected: dict[str, Any]) -> dict[str, Any]:
    return {
        "extensions": [
            {
                "name": name,
                "publisher": "Microsoft.CPlat.Core",
                "type": "RunCommandHandlerLinux",
                "typeHandlerVersion": "1.3",
                "settings": settings,
                "protectedSettings": protected,
            }
        ]
    }


def split(url: str) -> tuple[str, str]:
    base, _, query = url.partition("?")
    return base, query


def test_output_and_error_go_to_append_blobs(
    exthandler_agent: Agent, azurite: Azurite, container: str
) -> None:
    exthandler_agent.add_handler(RunCommand)
    out_url, sas = split(azurite.url(container, "out.txt"))
    err_url, _ = split(azurite.url(container, "err.txt"))
    azurite.put_blob(container, "out.txt", b"an older block blob, replaced")
    big = 5 * 1024 * 1024  # more than one append block
    text = f"head -c {big} /dev/zero | tr '\\0' 'x'; echo; echo done; echo oops >&2; exit 2"
    exthandler_agent.apply(
        rc(
            "upload",
            {"source": {"script": text}, "outputBlobUri": out_url, "errorBlobUri": err_url},
            {"outputBlobSASToken": sas, "errorBlobSASToken": "?" + sas},
        )
    )
    status = exthandler_agent.status("upload")
    assert status.code == "ProvisioningState/succeeded", status.message
    view = json.loads(status.message.partition("\n")[0])
    assert (view["executionState"], view["exitCode"]) == ("Failed", 2)
    assert view["output"].endswith("x\ndone\n")
    data, headers = azurite.get_blob(container, "out.txt")
    assert headers["x-ms-blob-type"] == "AppendBlob"
    assert data == b"x" * big + b"\ndone\n"
    data, headers = azurite.get_blob(container, "err.txt")
    assert (data, headers["x-ms-blob-type"]) == (b"oops\n", "AppendBlob")
    signature = urllib.parse.parse_qs(sas)["sig"][0]
    assert signature not in json.dumps(exthandler_agent.instance_view().to_json())
    for path in exthandler_agent.state_dir.rglob("*"):
        if path.is_file() and path.suffix != ".settings" and path.name != "journal":
            assert signature.encode() not in path.read_bytes(), path


def test_a_store_that_refuses_append_blobs_gets_a_block_blob(
    tmp_path: Path, azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[str] = []

    def refuse(url: str, **_: Any) -> blob.PutResult:
        refused.append(url)
        raise blob.BlobError("append blobs are not supported here", status=409)

    monkeypatch.setattr(blob, "create_append_blob", refuse)
    output = tmp_path / "stdout"
    output.write_bytes(b"line\n" * 3)
    target = BlobTarget(url=azurite.url(container, "block.txt"))
    assert _upload.upload(target, output) is None
    assert len(refused) == 1  # not retried: a 409 does not change
    data, headers = azurite.get_blob(container, "block.txt")
    assert (data, headers["x-ms-blob-type"]) == (b"line\n" * 3, "BlockBlob")


def test_a_failed_upload_is_a_warning_naming_the_blob_without_its_token(
    exthandler_agent: Agent, azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_upload, "BACKOFF", 0.01)
    exthandler_agent.add_handler(RunCommand)
    missing = unique_name("absent")  # a container that does not exist: 404, not retried
    out_url, sas = split(azurite.url(missing, "out.txt"))
    exthandler_agent.apply(
        rc(
            "nowhere",
            {"source": {"script": "echo hi"}, "outputBlobUri": out_url},
            {"outputBlobSASToken": sas},
        )
    )
    status = exthandler_agent.status("nowhere")
    assert (status.code, status.level) == ("ProvisioningState/succeeded", "Warning")
    view = json.loads(status.message)
    assert view["executionState"] == "Succeeded"
    assert view["output"] == "hi\n"
    assert view["executionMessage"].startswith(
        f"Execution completed; uploading stdout failed: {out_url}?<redacted>: "
    )
    assert urllib.parse.parse_qs(sas)["sig"][0] not in status.message
