"""Fixtures for the agent-as-a-service tests: built agent packages, and the runtime tests'
agent and packages fixtures."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from exthandler._model import Version
from exthandler._service.agents import LAUNCHER, build_agent_package
from tests.runtime.conftest import agent, packages  # noqa: F401  (fixtures)

# What a launcher that crashes at start runs instead of exthandler.
CRASHING_LAUNCHER = (
    "#!/usr/bin/env python3\nimport sys\nsys.stderr.write('crashing at start\\n')\nsys.exit(70)\n"
)

# Says READY=1 on its notify socket as `run` does, then never again: a wedged agent.
HANGING_LAUNCHER = """#!/usr/bin/env python3
import os, signal, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"READY=1\\nSTATUS=hanging", os.environ["NOTIFY_SOCKET"])
sys.stderr.write("hanging after start\\n")
sys.stderr.flush()
while True:
    signal.pause()
"""

Build = Callable[..., Path]


@pytest.fixture(scope="session")
def _built(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return {}


@pytest.fixture
def agent_package(
    tmp_path_factory: pytest.TempPathFactory, _built: dict[tuple[str, str], Path]
) -> Build:
    """`agent_package(version, into, crashing=False, hanging=False)`: a real agent package
    of this exthandler copied into the dir `into` (with its sidecar); `crashing` replaces
    its launcher by one that exits 70 at once, `hanging` by one that says READY=1 and then
    nothing. Built once per version for the session."""

    def build(version: str, into: Path, *, crashing: bool = False, hanging: bool = False) -> Path:
        key = (version, "crashing" if crashing else "hanging" if hanging else "good")
        if key not in _built:
            out = tmp_path_factory.mktemp(f"agent-{version}-{key[1]}")
            path = build_agent_package(out, version=Version.parse(version))
            if crashing:
                _replace(path, LAUNCHER, CRASHING_LAUNCHER)
            elif hanging:
                _replace(path, LAUNCHER, HANGING_LAUNCHER)
            _built[key] = path
        built = _built[key]
        into.mkdir(parents=True, exist_ok=True)
        shutil.copy(built, into / built.name)
        sidecar = built.with_name(built.name + ".sha256")
        if sidecar.exists():
            shutil.copy(sidecar, into / sidecar.name)
        return into / built.name

    return build


def _replace(path: Path, member: str, text: str) -> None:
    """Rewrite `member` of the zip at `path` (its sidecar is removed: the bytes changed)."""
    rebuilt = path.with_suffix(".new")
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(rebuilt, "w") as new:
        for info in old.infolist():
            data = text.encode() if info.filename == member else old.read(info)
            new.writestr(info, data)
    rebuilt.replace(path)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def install_agent(state_dir: Path, repo: Path, version: str) -> Path:
    """Install `version` from the repository `repo` into `state_dir`, as self-update does."""
    import anyio

    from exthandler._packages.repository import DirectoryRepository, Workspace
    from exthandler._service.agents import AgentStore

    async def go() -> Path:
        source = DirectoryRepository(repo)
        wanted = Version.parse(version)
        refs = [r for r in await source.list_packages() if r.version == wanted]
        assert refs, f"{version} not in {repo}"
        scratch = state_dir / "agent-scratch"
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        return await AgentStore(state_dir).install(source, refs[0], Workspace(scratch))

    return anyio.run(go)
