"""Package sources and executors an embedder writes: the runtime uses them as it uses its
own, with no special case for either."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from exthandler_sdk import Operation
from exthandler_sdk.protocol import Variable

from exthandler import (
    CommandRequest,
    CommandResult,
    Executor,
    HandlerManifest,
    HandlerName,
    Installed,
    InstanceView,
    PackageRef,
    PackageSource,
    RuntimeConfig,
    Version,
    Workspace,
    install_zip,
    open_runtime,
    parse_goal_state,
)
from exthandler._packages.repository import parse_package_file_name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def package(name: str, enable: str = "") -> bytes:
    """A real package zip whose enable script runs `enable` (sh) and reports success."""
    manifest = {
        "installCommand": "install.sh",
        "enableCommand": "enable.sh",
        "disableCommand": "true.sh",
        "uninstallCommand": "true.sh",
        "updateCommand": "true.sh",
    }
    status = (
        'printf \'[{"version":1,"status":{"status":"success","code":0,'
        '"formattedMessage":{"lang":"en-US","message":"from memory"}}}]\''
        ' > "status/$ConfigSequenceNumber.status"'
    )
    scripts = {
        "install.sh": "exit 0",
        "enable.sh": f"{enable}\n{status}",
        "true.sh": "exit 0",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "HandlerManifest.json",
            json.dumps([{"name": name, "version": 1.0, "handlerManifest": manifest}]),
        )
        for file_name, body in scripts.items():
            info = zipfile.ZipInfo(file_name)
            info.external_attr = 0o755 << 16
            archive.writestr(info, f"#!/bin/sh\n{body}\n")
    return buffer.getvalue()


@attrs.define
class MemorySource:
    """Packages held in memory, by file name (`Publisher.Type__Version.zip`)."""

    packages: dict[str, bytes]
    installed: list[str] = attrs.field(factory=list)

    async def list_packages(self) -> Sequence[PackageRef]:
        refs = []
        for file_name in sorted(self.packages):
            parsed = parse_package_file_name(file_name)
            assert parsed is not None
            refs.append(
                PackageRef(handler=parsed[0], version=parsed[1], location=f"mem:{file_name}")
            )
        return refs

    async def install(self, ref: PackageRef, directory: Path, workspace: Workspace) -> Installed:
        zip_path = workspace.path / ref.file_name
        await anyio.Path(zip_path).write_bytes(self.packages[ref.file_name])
        self.installed.append(ref.file_name)
        return await install_zip(zip_path, directory, workspace)


def goal(*extensions: tuple[str, str, str]) -> Any:
    return parse_goal_state(
        json.dumps(
            {
                "extensions": [
                    {
                        "name": name,
                        "publisher": handler.rsplit(".", 1)[0],
                        "type": handler.rsplit(".", 1)[1],
                        "typeHandlerVersion": version,
                        "settings": {"n": 1},
                    }
                    for name, handler, version in extensions
                ]
            }
        )
    )


def shown(view: InstanceView, name: str) -> tuple[str, str]:
    ext = next(e for e in view.extensions if e.name == name)
    return ext.statuses[0].level, ext.statuses[0].message


@pytest.mark.anyio
async def test_a_package_source_of_the_embedder_installs_real_packages(tmp_path: Path) -> None:
    source = MemorySource({"Contoso.Mem__1.0.zip": package("Contoso.Mem", "echo ran > ran")})
    assert isinstance(source, PackageSource)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Contoso.Disk__2.0.zip").write_bytes(package("Contoso.Disk"))
    config = RuntimeConfig(
        state_dir=tmp_path / "state", repositories=[repo, source], load_entry_points=False
    )
    async with open_runtime(config) as runtime:
        view = await runtime.apply(
            goal(("mem", "Contoso.Mem", "1.0"), ("disk", "Contoso.Disk", "2.0"))
        )
    assert shown(view, "mem") == ("Info", "from memory")
    assert shown(view, "disk") == ("Info", "from memory")
    assert source.installed == ["Contoso.Mem__1.0.zip"]
    # The enable ran as a real process in the handler dir the source filled.
    assert (tmp_path / "state" / "Contoso.Mem-1.0" / "ran").read_text() == "ran\n"
    # The source's zip went into the runtime's private workspace, and was removed.
    assert list((tmp_path / "state" / ".exthandler" / "downloads").iterdir()) == []


def test_repositories_refuse_what_is_neither_a_path_nor_a_source(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="neither a path nor a PackageSource"):
        RuntimeConfig(state_dir=tmp_path, repositories=[42])  # type: ignore[list-item]


@attrs.define
class Recorder:
    """An executor for one handler: it runs nothing and says each command succeeded,
    or skips the commands named in `skip`."""

    handler: str
    skip: frozenset[Operation] = frozenset()
    requests: list[CommandRequest] = attrs.field(factory=list)
    reads_handler_state: bool = True

    def accepts(self, manifest: HandlerManifest) -> bool:
        return manifest.name == self.handler

    def command_line(self, request: CommandRequest) -> str:
        return f"recorded {request.command}"

    async def run(self, request: CommandRequest) -> CommandResult:
        self.requests.append(request)
        if request.operation in self.skip:
            return CommandResult(
                operation=request.operation,
                command=request.command,
                exit_code=None,
                skipped="not here",
            )
        return CommandResult(operation=request.operation, command=request.command, exit_code=0)


@pytest.mark.anyio
async def test_an_executor_of_the_embedder_runs_the_commands_it_accepts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Contoso.Remote__1.0.zip").write_bytes(package("Contoso.Remote", "echo x > ran"))
    (repo / "Contoso.Local__1.0.zip").write_bytes(package("Contoso.Local", "echo x > ran"))
    recorder = Recorder("Contoso.Remote")
    assert isinstance(recorder, Executor)
    config = RuntimeConfig(
        state_dir=tmp_path / "state",
        repositories=[repo],
        executors=[recorder],
        handler_timeouts={"contoso.remote": 12.5},
        load_entry_points=False,
    )
    async with open_runtime(config) as runtime:
        view = await runtime.apply(
            goal(("remote", "Contoso.Remote", "1.0"), ("local", "Contoso.Local", "1.0"))
        )
    remote_dir = tmp_path / "state" / "Contoso.Remote-1.0"
    assert [(r.operation, r.command) for r in recorder.requests] == [
        (Operation.INSTALL, "install.sh"),
        (Operation.ENABLE, "enable.sh"),
    ]
    enable = recorder.requests[1]
    assert enable.handler == HandlerName.parse("Contoso.Remote")
    assert enable.version == Version.parse("1.0")
    assert enable.directory == remote_dir
    assert enable.timeout == 12.5  # the runtime's override for this handler
    assert enable.env[Variable.SEQUENCE_NUMBER] == "0"
    assert enable.env[Variable.EXTENSION_PATH] == str(remote_dir)
    assert (remote_dir / "config" / "0.settings").is_file()  # written before it ran
    # Nothing of the accepted handler ran as a process; the other one's did.
    assert not (remote_dir / "ran").exists()
    assert (tmp_path / "state" / "Contoso.Local-1.0" / "ran").exists()
    assert shown(view, "remote")[0] == "Info"
    # CommandExecution.log is each executor's to write: this one keeps none.
    assert not (tmp_path / "state" / "log" / "Contoso.Remote" / "CommandExecution.log").exists()
    assert (tmp_path / "state" / "log" / "Contoso.Local" / "CommandExecution.log").exists()


@pytest.mark.anyio
async def test_a_skipped_command_lets_the_handler_go_on(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Contoso.Remote__1.0.zip").write_bytes(package("Contoso.Remote"))
    recorder = Recorder("Contoso.Remote", skip=frozenset({Operation.INSTALL}))
    config = RuntimeConfig(
        state_dir=tmp_path / "state",
        repositories=[repo],
        executors=[recorder],
        load_entry_points=False,
    )
    async with open_runtime(config) as runtime:
        await runtime.apply(goal(("remote", "Contoso.Remote", "1.0")))
    assert [r.operation for r in recorder.requests] == [Operation.INSTALL, Operation.ENABLE]
    assert recorder.requests[0].timeout is None  # no override: the executor chooses
    log = (tmp_path / "state" / "exthandler.log").read_text()
    assert "Contoso.Remote 1.0: not here; skipped install" in log
