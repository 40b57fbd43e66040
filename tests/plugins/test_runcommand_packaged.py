"""Run Command packaged as a classic zip, run by a stand-in of the reference agent with a
bare `python3`: two named run commands in one handler dir, each with its own settings,
status and run-once state, as a multi-config agent drives them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exthandler_plugins.runcommand import RunCommand
from exthandler_sdk._package import build_package

from tests.plugins.support import FileServer, Route
from tests.sdk.standin_agent import StandinAgent, clean_path


def enable(
    agent: StandinAgent,
    handler_dir: Path,
    name: str,
    seq: int,
    public: dict[str, Any],
    protected: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `<name>.<seq>.settings`, run enable for extension `name`, return its status."""
    written = agent.write_settings(handler_dir, seq, public, protected)
    written.rename(written.with_name(f"{name}.{seq}.settings"))
    result = agent.run_command(handler_dir, "enable", seq, {"ConfigExtensionName": name})
    assert result.exit_code == 0, result.stderr
    document = json.loads((handler_dir / "status" / f"{name}.{seq}.status").read_text())
    status: dict[str, Any] = document[0]["status"]
    return status


def test_named_run_commands_under_a_bare_python(tmp_path: Path, file_server: FileServer) -> None:
    package = build_package(RunCommand, "exthandler_plugins.runcommand:RunCommand", tmp_path)
    file_server.routes["/get.sh"] = Route(body=b'echo "fetched $1 $WHO"\n')
    agent = StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")
    assert agent.base_env["PATH"] == clean_path()
    handler_dir = agent.extract(package)
    manifest = json.loads((handler_dir / "HandlerManifest.json").read_text())
    assert manifest[0]["handlerManifest"]["supportsMultipleExtensions"] is True
    assert agent.run_command(handler_dir, "install", 0).exit_code == 0

    one = enable(
        agent,
        handler_dir,
        "one",
        0,
        {"source": {"scriptUri": file_server.url("/get.sh")}, "parameters": [{"value": "it"}]},
        {"protectedParameters": [{"name": "WHO", "value": "me"}], "sourceSASToken": "sig=x"},
    )
    assert one["status"] == "success"
    assert json.loads(one["formattedMessage"]["message"])["output"] == "fetched it me\n"
    assert file_server.requests[0][0] == "/get.sh?sig=x"

    two = enable(agent, handler_dir, "two", 0, {"source": {"script": "echo two; exit 4"}})
    assert two["status"] == "success"
    view = json.loads(two["formattedMessage"]["message"])
    assert (view["executionState"], view["exitCode"], view["output"]) == ("Failed", 4, "two\n")

    # Each has its own run-once record: "one" again with its applied sequence does not
    # run, "two" with a new one does.
    assert (handler_dir / "one.mrseq").read_text().strip() == "0"
    again = enable(
        agent,
        handler_dir,
        "one",
        0,
        {"source": {"scriptUri": file_server.url("/get.sh")}},
        {"sourceSASToken": "sig=x"},
    )
    assert again["status"] == "success"
    assert file_server.hits("/get.sh") == 1
    two = enable(agent, handler_dir, "two", 1, {"source": {"script": "echo second"}})
    assert json.loads(two["formattedMessage"]["message"])["output"] == "second\n"
    assert sorted(p.name for p in (handler_dir / "runcommand" / "two").iterdir()) == ["1"]
    assert (handler_dir / "runcommand" / "one" / "0").is_dir()
