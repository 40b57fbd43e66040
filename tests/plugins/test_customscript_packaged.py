"""CustomScript packaged as a classic zip runs on a machine with only python3: its own
dependencies (httpx and what it needs) travel in the package."""

from __future__ import annotations

import zipfile
from pathlib import Path

from exthandler_plugins.customscript import CustomScript
from exthandler_sdk._package import build_package

from tests.plugins.support import FileServer, Route
from tests.sdk.standin_agent import StandinAgent, clean_path, read_status


def test_the_package_carries_httpx_and_downloads_under_a_bare_python(
    tmp_path: Path, file_server: FileServer
) -> None:
    package = build_package(
        CustomScript, "exthandler_plugins.customscript:CustomScript", tmp_path / "repo"
    )
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    for module in ("httpx", "httpcore", "h11", "anyio", "idna", "certifi"):
        assert f"lib/{module}/__init__.py" in names, module

    file_server.routes["/hello.sh"] = Route(body=b"echo downloaded-and-ran\n")
    agent = StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")
    assert agent.base_env["PATH"] == clean_path()
    handler_dir = agent.install_and_enable(
        package,
        0,
        {"fileUris": [file_server.url("/hello.sh")], "commandToExecute": "sh hello.sh"},
        None,
    )
    status = read_status(handler_dir, 0)
    assert status is not None
    assert status["status"]["status"] == "success", status
    stdout = next(s for s in status["status"]["substatus"] if s["name"] == "StdOut")
    assert "downloaded-and-ran" in stdout["formattedMessage"]["message"]
    assert file_server.hits("/hello.sh") == 1
