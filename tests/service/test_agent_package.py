"""Agent packages built from this exthandler, and the versions installed in a state dir."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from exthandler_sdk import ErrorCode

from exthandler._cli.main import main
from exthandler._errors import PackageError
from exthandler._model import Version
from exthandler._packages.manifest import parse_manifest
from exthandler._service.agents import (
    LAUNCHER,
    AgentStore,
    agent_handler,
    build_agent_package,
)
from exthandler._testing._ca import SigningCA
from tests.service.conftest import Build, install_agent


def _install(store: AgentStore, repo: Path, version: str) -> Path:
    return install_agent(store.state_dir, repo, version)


def test_a_package_is_a_handler_package_of_the_agent_family(tmp_path: Path) -> None:
    path = build_agent_package(tmp_path, version=Version.parse("0.1.7"), family="Test")
    assert path.name == "Exthandler.Agent.Test__0.1.7.zip"
    digest, name = (tmp_path / f"{path.name}.sha256").read_text().split()
    assert (digest, name) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        manifest = parse_manifest(archive.read("HandlerManifest.json"))
        init = archive.read("lib/exthandler/__init__.py").decode()
        launcher = archive.getinfo(LAUNCHER)
    assert manifest.name == "Exthandler.Agent.Test"
    assert manifest.version == "0.1.7"
    assert {"lib/exthandler/_cli/main.py", "lib/exthandler_sdk/__init__.py"} <= names
    assert "lib/exthandler/data/exthandler.service" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert '__version__ = "0.1.7"' in init
    assert (launcher.external_attr >> 16) & 0o777 == 0o755
    # The same sources give the same bytes.
    again = build_agent_package(tmp_path / "again", version=Version.parse("0.1.7"), family="Test")
    assert again.read_bytes() == path.read_bytes()


def test_an_installed_version_runs_its_own_code(tmp_path: Path, agent_package: Build) -> None:
    repo = tmp_path / "repo"
    agent_package("0.1.5", repo)
    store = AgentStore(tmp_path / "state")
    (tmp_path / "state").mkdir()
    installed = _install(store, repo, "0.1.5")
    assert installed == tmp_path / "state" / "agent" / "0.1.5"
    assert store.installed() == [Version.parse("0.1.5")] == store.good()
    assert oct(installed.stat().st_mode & 0o777) == oct(0o755)
    assert store.launcher(Version.parse("0.1.5")).stat().st_mode & 0o777 == 0o755
    assert (installed / "lib/exthandler/_fs.py").stat().st_mode & 0o777 == 0o744
    # Nothing but the version's dir is left in the agent dir.
    assert sorted(os.listdir(store.root)) == ["0.1.5"]
    out = subprocess.run(
        [sys.executable, str(store.launcher(Version.parse("0.1.5"))), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "exthandler 0.1.5\n"


def test_marks_and_selection(tmp_path: Path, agent_package: Build) -> None:
    repo = tmp_path / "repo"
    for version in ("0.1.1", "0.1.2"):
        agent_package(version, repo)
    (tmp_path / "state").mkdir()
    store = AgentStore(tmp_path / "state")
    _install(store, repo, "0.1.1")
    _install(store, repo, "0.1.2")
    (store.root / "junk").mkdir()
    (store.root / "0.9.9").mkdir()  # no launcher: not a version
    assert store.installed() == [Version.parse("0.1.1"), Version.parse("0.1.2")]
    store.mark_bad(Version.parse("0.1.2"), "exited abnormally 3 times")
    assert store.good() == [Version.parse("0.1.1")]
    assert store.bad_reason(Version.parse("0.1.2")) == "exited abnormally 3 times"
    assert store.bad_reason(Version.parse("0.1.1")) is None
    assert store.selected() is None
    store.select(Version.parse("0.1.1"))
    assert store.selected() == Version.parse("0.1.1")
    assert (store.root / "selected").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("member", "reason"),
    [(None, "no bin/exthandler-agent"), ("bad", "it holds a top-level 'bad'")],
)
def test_a_package_that_is_no_agent_package_is_refused(
    tmp_path: Path, member: str | None, reason: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    name = agent_handler("Prod")
    with zipfile.ZipFile(repo / f"{name}__0.1.3.zip", "w") as archive:
        archive.writestr(
            "HandlerManifest.json",
            json.dumps(
                [
                    {
                        "handlerManifest": {
                            f"{op}Command": "x"
                            for op in ("install", "enable", "disable", "uninstall")
                        }
                    }
                ]
            ),
        )
        if member is not None:
            archive.writestr(LAUNCHER, "")
            archive.writestr(member, "")
    (tmp_path / "state").mkdir()
    store = AgentStore(tmp_path / "state")
    with pytest.raises(PackageError) as caught:
        _install(store, repo, "0.1.3")
    assert caught.value.code == ErrorCode.PACKAGE_EXTRACTION
    assert reason in caught.value.message
    assert os.listdir(store.root) == []  # nothing left behind


def test_cli_package_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "package", "--out", str(tmp_path / "out"), "--version", "0.1.9"]) == 0
    assert capsys.readouterr().out.strip() == str(
        tmp_path / "out" / "Exthandler.Agent.Prod__0.1.9.zip"
    )
    with pytest.raises(SystemExit) as exited:
        main(["agent", "package", "--out", str(tmp_path), "--version", "x"])
    assert exited.value.code == 2
    assert "--version: 'x' is not a version" in capsys.readouterr().err
    state = tmp_path / "state"
    (state / "agent" / "0.1.9" / "bin").mkdir(parents=True)
    (state / "agent" / "0.1.9" / "bin" / "exthandler-agent").write_text("")
    (state / "agent" / "0.1.9" / "bad").write_text("crashed 3 times\n")
    assert main(["agent", "list", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split(None, 2) == ["0.1.9", "bad", "crashed 3 times"]
    assert "this installation" in out[2]


def test_cli_signs_an_agent_package_as_it_names_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = SigningCA(tmp_path / "ca")
    out = tmp_path / "out"
    argv = ["agent", "package", "--out", str(out), "--version", "0.1.9"]
    signing = ["--sign-key", str(ca.leaf.key_path), "--sign-cert", str(ca.leaf.certificate_path)]
    assert main([*argv, *signing, "--chain", str(ca.chain_path)]) == 0
    package = out / "Exthandler.Agent.Prod__0.1.9.zip"
    with zipfile.ZipFile(package) as archive:
        (entry,) = json.loads(archive.read("HandlerManifest.json"))
    assert entry["signingInfo"] == {
        "type": "Prod",
        "publisher": "Exthandler.Agent",
        "version": "0.1.9",
    }
    signature = package.with_name(package.name + ".sig")
    der = base64.b64decode(signature.read_text())
    verified = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "/dev/stdin",
         "-content", str(package), "-CAfile", str(ca.root.certificate_path),
         "-purpose", "any", "-out", "/dev/null"],
        input=der, capture_output=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    # A build without a signer leaves no signature of an earlier build behind.
    capsys.readouterr()
    assert main(argv) == 0
    assert not signature.exists()
    with pytest.raises(SystemExit):
        main([*argv, "--sign-key", str(ca.leaf.key_path)])
    assert "--sign-key and --sign-cert go together" in capsys.readouterr().err
