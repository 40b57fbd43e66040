"""CustomScript under the runtime: in process, packaged, run-once, failures, redaction."""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path
from typing import Any

import exthandler_plugins
import pytest
from exthandler_plugins.customscript import CustomScript, _handler
from exthandler_sdk._package import build_package

from exthandler import InstanceView
from exthandler._plugins import load_object
from tests.plugins.support import (
    BACKENDS,
    DIR,
    HANDLER,
    FileServer,
    Route,
    apply,
    goal,
    status,
    subs,
)

SAS = "sv=2022-11-02&sig=TopSecretSignature%3D"


def b64(text: bytes, compress: bool = False) -> str:
    return base64.b64encode(gzip.compress(text) if compress else text).decode()


def test_registered_through_the_entry_point_hook() -> None:
    paths = exthandler_plugins.exthandler_handler_paths()
    assert load_object(paths[CustomScript.name]) is CustomScript
    assert CustomScript.name == HANDLER
    assert CustomScript.version == "2.1.0"


@pytest.mark.parametrize("backend", BACKENDS)
def test_command_with_downloaded_files(
    tmp_path: Path, file_server: FileServer, backend: str
) -> None:
    file_server.routes["/run.sh"] = Route(body=b"echo from $1\r\necho oops >&2\r\n")
    view = apply(
        tmp_path / "s",
        goal(
            {"fileUris": [file_server.url(f"/run.sh?{SAS}")]},
            {"commandToExecute": "sh run.sh the-file"},
        ),
        backend,
    )
    code, message = status(view)
    assert code == "ProvisioningState/succeeded"
    assert message.startswith("Enable succeeded: the script exited with 0\n[stdout]\nfrom the-file")
    assert subs(view) == {
        "StdOut": ("ComponentStatus/StdOut/succeeded", "from the-file\n"),
        "StdErr": ("ComponentStatus/StdErr/succeeded", "oops\n"),
    }
    download = tmp_path / "s" / DIR / "download"
    assert (download / "0" / "run.sh").read_bytes() == b"echo from $1\necho oops >&2\n"
    assert (download / "0").stat().st_mode & 0o777 == 0o700
    assert (download / "0" / "stdout").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("compress", [False, True])
def test_inline_script(tmp_path: Path, compress: bool) -> None:
    script = b'#!/bin/sh\r\necho "seq=$ConfigSequenceNumber dir=$(basename $PWD)"\r\n'
    view = apply(tmp_path / "s", goal({"script": b64(script, compress)}))
    assert subs(view)["StdOut"][1] == "seq=0 dir=0\n"
    saved = (tmp_path / "s" / DIR / "download" / "0" / "script.sh").read_bytes()
    assert b"\r" not in saved


def test_skip_dos2unix(tmp_path: Path) -> None:
    view = apply(
        tmp_path / "s",
        goal({"script": b64(b"printf 'a\\n' > out\r\n"), "skipDos2Unix": True}),
    )
    assert (tmp_path / "s" / DIR / "download" / "0" / "script.sh").read_bytes().endswith(b"\r\n")
    assert status(view)[0] == "ProvisioningState/succeeded"


def test_a_failing_script_reports_its_exit_code_and_stderr(tmp_path: Path) -> None:
    view = apply(
        tmp_path / "s",
        goal({"commandToExecute": "echo partial; echo 'disk full' >&2; exit 7"}),
    )
    code, message = status(view)
    assert code == "ProvisioningState/failed/7"
    assert view.extensions[0].statuses[0].level == "Error"
    assert "Enable failed: the script exited with code 7" in message
    assert "[stderr]\ndisk full" in message
    assert subs(view)["StdErr"] == ("ComponentStatus/StdErr/failed", "disk full\n")


def test_run_once_success_not_repeated_failure_retried(tmp_path: Path) -> None:
    state = tmp_path / "s"
    counter = tmp_path / "runs"
    command = f"echo run >> {counter}; test -e {tmp_path / 'ok'}"
    assert status(apply(state, goal({"commandToExecute": command})))[0].endswith("failed/1")
    # Same sequence number, re-enabled (forceUpdateTag): the failed run is retried.
    (tmp_path / "ok").touch()
    view = apply(state, goal({"commandToExecute": command}, forceUpdateTag="again"))
    assert view.extensions[0].sequence_number == 0
    assert status(view)[0] == "ProvisioningState/succeeded"
    assert counter.read_text().count("run") == 2
    # Succeeded: another re-enable of the same sequence does not run it again.
    view = apply(state, goal({"commandToExecute": command}, forceUpdateTag="third"))
    assert status(view)[0] == "ProvisioningState/succeeded"
    assert counter.read_text().count("run") == 2
    # A new timestamp alone is a new sequence number: it runs again, and the old
    # sequence's download dir goes away.
    view = apply(state, goal({"commandToExecute": command, "timestamp": 2}, forceUpdateTag="third"))
    assert view.extensions[0].sequence_number == 1
    assert counter.read_text().count("run") == 3
    assert sorted(p.name for p in (state / DIR / "download").iterdir()) == ["1"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_uninstall_removes_every_download_dir(tmp_path: Path, backend: str) -> None:
    state = tmp_path / "s"
    apply(state, goal({"commandToExecute": "true"}), backend)
    assert (state / DIR / "download" / "0").is_dir()
    view = apply(state, goal({"commandToExecute": "true"}, state="uninstall"), backend)
    assert view.extensions == ()
    assert not (state / DIR).exists()


def test_conflicts_and_refused_settings_are_error_53(tmp_path: Path) -> None:
    view = apply(
        tmp_path / "a", goal({"commandToExecute": "echo a"}, {"commandToExecute": "echo b"})
    )
    code, message = status(view)
    assert code == "ProvisioningState/failed/53"
    assert "commandToExecute: set in both the public and the protected settings" in message
    view = apply(tmp_path / "b", goal({"commandToExecute": "true"}, {"managedIdentity": {}}))
    assert status(view)[0] == "ProvisioningState/failed/53"
    assert "managedIdentity: not supported here" in status(view)[1]
    view = apply(tmp_path / "c", goal({"commandToExecute": "true", "timestamp": "soon"}))
    assert status(view)[0] == "ProvisioningState/failed/53"


def test_a_download_failure_is_reported_redacted(tmp_path: Path, file_server: FileServer) -> None:
    state = tmp_path / "s"
    file_server.routes["/flaky.sh"] = Route(body=b"echo ok\n", failures=[500])
    url = file_server.url(f"/nope.sh?{SAS}")
    view = apply(
        state,
        goal(
            {"fileUris": [file_server.url(f"/flaky.sh?{SAS}"), url]},
            {"commandToExecute": "echo $0 https://user:pw@h/x?sig=PrintedSecret"},
        ),
    )
    code, message = status(view)
    assert code == "ProvisioningState/failed/1"
    assert message.startswith(f"{file_server.url('/nope.sh')}?<redacted>: HTTP 404 (not retried)")
    assert_no_secret(state, view)


def test_output_quoting_urls_is_redacted(tmp_path: Path) -> None:
    state = tmp_path / "s"
    view = apply(
        state, goal({"commandToExecute": "echo fetching https://h/x.sh?sig=PrintedSecret"})
    )
    assert "https://h/x.sh?<redacted>" in subs(view)["StdOut"][1]
    assert_no_secret(state, view, allow_download_dir=True)


def assert_no_secret(state: Path, view: InstanceView, allow_download_dir: bool = False) -> None:
    assert "TopSecret" not in json.dumps(view.to_json())
    assert "PrintedSecret" not in json.dumps(view.to_json())
    for path in state.rglob("*"):
        if not path.is_file() or path.suffix == ".settings" or path.name == "journal":
            continue
        if allow_download_dir and "download" in path.parts:
            continue  # the script's own output files hold what it printed
        text = path.read_bytes()
        assert b"TopSecret" not in text, path
        assert b"PrintedSecret" not in text, path


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_budget_kills_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setattr(_handler, "SCRIPT_BUDGET", 0.5)
    monkeypatch.setattr(_handler, "STATUS_INTERVAL", 0.1)
    started = time.monotonic()
    view = apply(
        tmp_path / "s", goal({"commandToExecute": "echo started; sleep 30 & wait"}), backend
    )
    assert time.monotonic() - started < 10
    code, message = status(view)
    assert code == "ProvisioningState/failed/1011"
    assert "did not finish within" in message
    assert "[stdout]\nstarted" in message


def test_in_process_and_packaged_give_the_same_view(
    tmp_path: Path, file_server: FileServer
) -> None:
    file_server.routes["/tool.sh"] = Route(body=b"echo tool says $1\n")
    document = goal(
        {"fileUris": [file_server.url(f"/tool.sh?{SAS}")], "timestamp": 5},
        {"commandToExecute": "sh tool.sh hi; echo warn >&2; exit 3"},
    )
    inproc = apply(tmp_path / "inproc", document)
    repo = tmp_path / "repo"
    build_package(CustomScript, "exthandler_plugins.customscript:CustomScript", repo)
    packaged = apply(tmp_path / "packaged", document, handlers=(), repositories=[repo])

    def normal(view: InstanceView) -> Any:
        data = view.to_json()
        data.pop("goalStateId", None)
        for ext in data["extensions"]:
            for entry in ext["statuses"]:
                entry.pop("time", None)
                # The process executor appends the command's own (empty) output to the
                # runtime's failure note; the in-process executor has none to append.
                entry["message"] = entry["message"].removesuffix(" [stdout]\n\n\n[stderr]\n")
        return data

    assert status(inproc)[0] == "ProvisioningState/failed/3"
    assert json.dumps(normal(inproc), indent=1) == json.dumps(normal(packaged), indent=1)
    assert subs(packaged)["StdOut"][1] == "tool says hi\n"
    assert not (tmp_path / "packaged" / DIR / ".exthandler-inprocess").exists()
