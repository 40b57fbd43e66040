"""The bundled example packages: up to date, safe to extract, and working handlers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from exthandler_sdk import Operation

from exthandler._model import HandlerName, Version
from exthandler._packages.extract import extract_package
from exthandler._packages.manifest import MANIFEST_NAME
from exthandler._packages.repository import DirectoryRepository, RepositorySet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILD = EXAMPLES / "build.py"
REPO = EXAMPLES / "repo"
PACKAGES = {
    "Contoso.Examples.Hello__1.0.0.zip": ("Contoso.Examples.Hello", "1.0.0"),
    "Contoso.Examples.Hello__1.0.1.zip": ("Contoso.Examples.Hello", "1.0.1"),
    "Contoso.Examples.Notes__2.0.0.zip": ("Contoso.Examples.Notes", "2.0.0"),
}
# dash rejects most bash-isms, so it is the stricter judge of "POSIX sh only"
SHELL = shutil.which("dash") or "/bin/sh"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def build(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_committed_repo_is_up_to_date() -> None:
    result = build("--check")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in REPO.glob("*.zip")) == sorted(PACKAGES)


def test_build_is_deterministic_and_check_notices_drift(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    assert build("--repo", out).returncode == 0
    for name in PACKAGES:
        assert (out / name).read_bytes() == (REPO / name).read_bytes()
        assert (out / (name + ".sha256")).read_bytes() == (REPO / (name + ".sha256")).read_bytes()
    rebuilt = build("--repo", out)
    assert (rebuilt.returncode, rebuilt.stdout) == (0, "")
    assert build("--repo", out, "--check").returncode == 0

    zip_name = next(iter(PACKAGES))
    (out / zip_name).write_bytes(b"not the package")
    (out / "Old.Handler__0.1.zip").write_bytes(b"stale")
    (out / (zip_name.replace("1.0.0", "1.0.1") + ".sha256")).unlink()
    (out / "Contoso.Examples.Notes__2.0.0.zip").unlink()
    result = build("--repo", out, "--check")
    assert result.returncode == 1
    for expected in ("differs", "Old.Handler__0.1.zip", ".sha256", "Notes__2.0.0.zip: missing"):
        assert expected in result.stderr

    assert build("--repo", out).returncode == 0
    assert not (out / "Old.Handler__0.1.zip").exists()
    assert build("--repo", out, "--check").returncode == 0


def test_build_rejects_badly_named_sources(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    (packages / "NoDot" / "1.0").mkdir(parents=True)
    result = build("--packages", packages, "--repo", tmp_path / "repo")
    assert result.returncode == 2
    assert "NoDot" in result.stderr
    shutil.rmtree(packages / "NoDot")
    (packages / "Pub.Type" / "latest").mkdir(parents=True)
    result = build("--packages", packages, "--repo", tmp_path / "repo")
    assert result.returncode == 2
    assert "latest" in result.stderr


def test_build_skips_hidden_files_and_refuses_links(tmp_path: Path) -> None:
    source = tmp_path / "packages" / "Pub.Type" / "1.0"
    source.mkdir(parents=True)
    (source / MANIFEST_NAME).write_text("[]")
    (source / ".swp").write_text("litter")
    result = build("--packages", tmp_path / "packages", "--repo", tmp_path / "repo")
    assert result.returncode == 0, result.stderr
    (source / "link").symlink_to(MANIFEST_NAME)
    result = build("--packages", tmp_path / "packages", "--repo", tmp_path / "repo")
    assert result.returncode == 2
    assert "link" in result.stderr


@pytest.mark.parametrize("zip_name", sorted(PACKAGES))
def test_example_extracts_and_its_manifest_parses(tmp_path: Path, zip_name: str) -> None:
    target = tmp_path / zip_name.replace("__", "-").removesuffix(".zip")
    manifest = extract_package(REPO / zip_name, target)
    for operation in Operation:
        assert manifest.command(operation) == f"bin/handler.sh {operation.value}"
    assert not manifest.supports_multiple_extensions
    script = target / "bin" / "handler.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert subprocess.run([SHELL, "-n", str(script)], check=False).returncode == 0


def run_handler(handler_dir: Path, operation: str, seq: int, **env: str) -> str:
    """Run an operation the way the agent does: `sh -c <dir>/<command>` in the handler dir."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ConfigSequenceNumber": str(seq),
        "AZURE_GUEST_AGENT_EXTENSION_PATH": str(handler_dir),
        **env,
    }
    result = subprocess.run(
        [SHELL, "-c", f"{handler_dir}/bin/handler.sh {operation}"],
        cwd=handler_dir,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_settings(handler_dir: Path, seq: int, public: dict[str, Any] | None) -> None:
    config = handler_dir / "config"
    config.mkdir(exist_ok=True)
    path = config / f"{seq}.settings"
    if public is None:
        path.write_text("")
    else:
        document = {"runtimeSettings": [{"handlerSettings": {"publicSettings": public}}]}
        path.write_text(json.dumps(document, indent=2))


def read_status(handler_dir: Path, seq: int) -> dict[str, Any]:
    document = json.loads((handler_dir / "status" / f"{seq}.status").read_text())
    assert isinstance(document, list)
    status: dict[str, Any] = document[0]["status"]
    assert status["operation"] == "Enable"
    assert status["code"] == 0
    assert status["formattedMessage"]["lang"] == "en-US"
    assert document[0]["timestampUTC"].endswith("Z")
    return status


@pytest.mark.parametrize("version", ["1.0.0", "1.0.1"])
def test_hello_greets_and_reports_success(tmp_path: Path, version: str) -> None:
    handler_dir = tmp_path / f"Contoso.Examples.Hello-{version}"
    extract_package(REPO / f"Contoso.Examples.Hello__{version}.zip", handler_dir)
    for operation in ("install", "disable", "uninstall"):
        assert operation in run_handler(handler_dir, operation, 0)
    updated = run_handler(
        handler_dir, "update", 0, VERSION=version, AZURE_GUEST_AGENT_UPDATING_FROM_VERSION="0.9"
    )
    assert f"update from 0.9 to {version}" in updated

    write_settings(handler_dir, 0, None)
    stdout = run_handler(handler_dir, "enable", 0)
    status = read_status(handler_dir, 0)
    assert status["status"] == "success"
    assert status["formattedMessage"]["message"] == f"Hello from Contoso.Examples.Hello {version}"
    assert f"Hello from Contoso.Examples.Hello {version}" in stdout

    write_settings(handler_dir, 1, {"other": 1, "greeting": "good morning, world"})
    stdout = run_handler(handler_dir, "enable", 1)
    message = read_status(handler_dir, 1)["formattedMessage"]["message"]
    assert message == f"Hello from Contoso.Examples.Hello {version}: good morning, world"
    assert "good morning, world" in stdout
    assert sorted(p.name for p in (handler_dir / "status").iterdir()) == ["0.status", "1.status"]


def test_notes_writes_its_note(tmp_path: Path) -> None:
    handler_dir = tmp_path / "Contoso.Examples.Notes-2.0.0"
    extract_package(REPO / "Contoso.Examples.Notes__2.0.0.zip", handler_dir)
    write_settings(handler_dir, 3, {"note": "water the plants"})
    run_handler(handler_dir, "enable", 3)
    assert (handler_dir / "notes.txt").read_text() == "water the plants\n"
    status = read_status(handler_dir, 3)
    assert status["status"] == "success"
    assert "Contoso.Examples.Notes 2.0.0" in status["formattedMessage"]["message"]

    write_settings(handler_dir, 4, None)
    run_handler(handler_dir, "enable", 4)
    assert (handler_dir / "notes.txt").read_text() == "\n"
    assert "no note" in read_status(handler_dir, 4)["formattedMessage"]["message"]
    assert not list(handler_dir.rglob("*.tmp"))


def test_handler_finds_its_dir_without_the_environment(tmp_path: Path) -> None:
    handler_dir = tmp_path / "hello"
    extract_package(REPO / "Contoso.Examples.Hello__1.0.1.zip", handler_dir)
    result = subprocess.run(
        [SHELL, str(handler_dir / "bin" / "handler.sh"), "enable"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert read_status(handler_dir, 0)["status"] == "success"
    bad = subprocess.run(
        [SHELL, str(handler_dir / "bin" / "handler.sh"), "explode"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "usage" in bad.stderr


@pytest.mark.anyio
async def test_examples_repository_lists_and_fetches(tmp_path: Path) -> None:
    repo = DirectoryRepository(REPO)
    repos = RepositorySet([repo])
    hello = HandlerName.parse("Contoso.Examples.Hello")
    catalog = await repos.catalog()
    assert catalog.available(hello) == [Version.parse("1.0.0"), Version.parse("1.0.1")]
    assert len(await repos.list_all()) == len(PACKAGES)
    for ref in await repos.list_all():
        dest = await repo.fetch(ref, tmp_path / ref.file_name)
        assert dest.read_bytes() == (REPO / ref.file_name).read_bytes()
