"""`python -m exthandler_sdk package`: a deterministic, self-contained handler zip."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import exthandler_sdk
import pytest
from exthandler_sdk import Handler
from exthandler_sdk._handler import manifest
from exthandler_sdk._package import (
    PackageError,
    _add_handler_source,
    _add_tree,
    _distribution_files,
    _requirement_applies,
    _runtime_dependencies,
    build_package,
    load_handler_class,
    main_package,
    package_file_name,
)

from . import packaged_handlers
from .packaged_handlers import Flagged, Greeter, Unnamed
from .standin_agent import StandinAgent, read_status

GREETER = "tests.sdk.packaged_handlers:Greeter"
FLAGGED = "tests.sdk.packaged_handlers:Flagged"
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture(scope="module")
def greeter_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(Greeter, GREETER, tmp_path_factory.mktemp("out"))


def _names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.namelist()


def test_zip_is_named_after_handler_and_version(greeter_zip: Path) -> None:
    assert greeter_zip.name == "Contoso.Testing.Greeter__1.0.0.zip"
    assert package_file_name(Flagged) == "Contoso.Testing.Flagged__2.1.zip"


def test_sidecar_is_in_sha256sum_format(greeter_zip: Path) -> None:
    sidecar = greeter_zip.with_name(greeter_zip.name + ".sha256")
    digest = hashlib.sha256(greeter_zip.read_bytes()).hexdigest()
    assert sidecar.read_text() == f"{digest}  {greeter_zip.name}\n"
    checked = subprocess.run(
        ["sha256sum", "-c", sidecar.name], cwd=greeter_zip.parent, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_manifest_has_default_options(greeter_zip: Path) -> None:
    with zipfile.ZipFile(greeter_zip) as archive:
        document = json.loads(archive.read("HandlerManifest.json"))
    assert document == [
        {
            "name": "Greeter",
            "version": 1.0,
            "handlerManifest": {
                "installCommand": "bin/install",
                "enableCommand": "bin/enable",
                "disableCommand": "bin/disable",
                "updateCommand": "bin/update",
                "uninstallCommand": "bin/uninstall",
                "rebootAfterInstall": False,
                "reportHeartbeat": False,
                "supportsMultipleExtensions": False,
                "updateMode": "UpdateWithInstall",
                "continueOnUpdateFailure": False,
            },
        }
    ]


def test_manifest_carries_class_options() -> None:
    options = manifest(Flagged)[0]["handlerManifest"]
    assert manifest(Flagged)[0]["name"] == "Flagged"
    assert options["reportHeartbeat"] is True
    assert options["supportsMultipleExtensions"] is True
    assert options["updateMode"] == "UpdateWithoutInstall"
    assert options["continueOnUpdateFailure"] is True


def test_an_enable_that_runs_again_on_the_same_sequence_is_always_run(tmp_path: Path) -> None:
    built = build_package(Flagged, "tests.sdk.packaged_handlers:Flagged", tmp_path)
    with zipfile.ZipFile(built) as archive:
        shim = archive.read("bin/enable").decode()
    assert "-m exthandler_sdk run tests.sdk.packaged_handlers:Flagged enable\n" in shim


def test_builds_are_byte_for_byte_identical(tmp_path: Path) -> None:
    first = build_package(Flagged, FLAGGED, tmp_path / "a")
    second = build_package(Flagged, FLAGGED, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    for info in infos:
        mode = info.external_attr >> 16
        assert mode == (0o100755 if info.filename.startswith("bin/") else 0o100644), info


def test_shims_are_posix_sh_running_the_sdk(greeter_zip: Path) -> None:
    with zipfile.ZipFile(greeter_zip) as archive:
        for op in ("install", "enable", "disable", "update", "uninstall"):
            shim = archive.read(f"bin/{op}").decode()
            assert shim.startswith("#!/bin/sh\n")
            # enable answers an applied sequence number without importing the module
            tail = " --runs-once-as Contoso.Testing.Greeter" if op == "enable" else ""
            assert f"-m exthandler_sdk run {GREETER} {op}{tail}\n" in shim
            assert 'PYTHONPATH="$here/lib"' in shim
            check = subprocess.run(["/bin/sh", "-n", "-c", shim], capture_output=True)
            assert check.returncode == 0, check.stderr


def test_sdk_dependencies_and_handler_source_are_vendored(greeter_zip: Path) -> None:
    names = set(_names(greeter_zip))
    for module in (
        "lib/exthandler_sdk/__init__.py",
        "lib/exthandler_sdk/_runner.py",
        "lib/exthandler_sdk/py.typed",
        "lib/anyio/__init__.py",
        "lib/attr/__init__.py",
        "lib/attrs/__init__.py",
        "lib/cattrs/__init__.py",
        "lib/cattr/__init__.py",
        "lib/pluggy/__init__.py",
        "lib/typing_extensions.py",
        "lib/tests/__init__.py",
        "lib/tests/sdk/__init__.py",
        "lib/tests/sdk/packaged_handlers.py",
    ):
        assert module in names
    assert any(name.startswith("lib/attrs-") and "LICENSE" in name for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    # The SDK's optional extra is not vendored (it is compiled), nor is any metadata.
    assert not [name for name in names if name.startswith("lib/cryptography")]
    assert not [name for name in names if name.endswith(("RECORD", "direct_url.json"))]


def test_a_single_module_handler_is_vendored_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "lonely_handler.py").write_text(
        "from exthandler_sdk import Handler\n\n"
        "class Lonely(Handler[None, None]):\n"
        "    name = 'Contoso.Testing.Lonely'\n"
        "    version = '1.0'\n"
    )
    monkeypatch.syspath_prepend(str(source))
    monkeypatch.delitem(sys.modules, "lonely_handler", raising=False)
    handler = load_handler_class("lonely_handler:Lonely")
    names = _names(build_package(handler, "lonely_handler:Lonely", tmp_path / "out"))
    assert "lib/lonely_handler.py" in names
    assert not [name for name in names if name.startswith("lib/tests/")]


def test_a_handler_inside_the_sdk_adds_no_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Inside(Handler[None, None]):
        name = "Contoso.Testing.Inside"
        version = "1.0"

    monkeypatch.setattr(exthandler_sdk, "Inside", Inside, raising=False)
    names = _names(build_package(Inside, "exthandler_sdk:Inside", tmp_path))
    assert "lib/exthandler_sdk/__init__.py" in names
    assert not [name for name in names if name.startswith("lib/tests/")]


def test_only_source_modules_are_vendored() -> None:
    with pytest.raises(PackageError, match="'math': it is not a Python source module"):
        _add_handler_source({}, "math.anything")


def test_trees_skip_bytecode_and_hidden_files(tmp_path: Path) -> None:
    for name in ("a.py", "sub/b.py", "sub/c.pyc", "__pycache__/a.cpython-311.pyc", ".hidden/d.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".env").write_text("")
    entries: dict[str, bytes] = {}
    _add_tree(entries, tmp_path, PurePosixPath("lib", "pkg"))
    assert entries == {"lib/pkg/a.py": b"a.py", "lib/pkg/sub/b.py": b"sub/b.py"}


def test_refuses_a_bad_handler(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"must be 'Publisher\.Type'"):
        build_package(Unnamed, "tests.sdk.packaged_handlers:Unnamed", tmp_path)
    with pytest.raises(PackageError, match="does not name Greeter"):
        build_package(Greeter, FLAGGED, tmp_path)
    with pytest.raises(PackageError, match="run as a script cannot be packaged"):
        build_package(Greeter, "__main__:Greeter", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected MODULE:CLASS"),
        ("module:", "expected MODULE:CLASS"),
        ("no_such_module_anywhere:X", "cannot import module 'no_such_module_anywhere'"),
        ("tests.sdk.packaged_handlers:Missing", "has no attribute 'Missing'"),
        ("tests.sdk.packaged_handlers:GreeterSettings", "is not a subclass of .*Handler"),
        ("tests.sdk.packaged_handlers:EXPECTED_TOKEN", "is not a subclass of .*Handler"),
    ],
)
def test_load_handler_class_errors(spec: str, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        load_handler_class(spec)


def test_load_handler_class_follows_dotted_names(monkeypatch: pytest.MonkeyPatch) -> None:
    nested = type("Nested", (), {"Inner": Greeter})
    monkeypatch.setattr(packaged_handlers, "Nested", nested, raising=False)
    assert load_handler_class("tests.sdk.packaged_handlers:Nested.Inner") is Greeter


def test_cli_prints_the_written_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like `python -m`, the command imports from the current directory.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != ""])
    assert main_package([FLAGGED, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'Contoso.Testing.Flagged__2.1.zip'}\n"
    assert sys.path[0] == ""


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_package(["tests.sdk.packaged_handlers:Unnamed", "--out", str(tmp_path)]) == 2
    assert "error: cannot package" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main_package([FLAGGED, "--out", str(blocker / "sub")]) == 2
    assert "error:" in capsys.readouterr().err


def test_module_entry_point(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "exthandler_sdk", "package", FLAGGED, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(tmp_path / "Contoso.Testing.Flagged__2.1.zip")


# -- dependency discovery against fake installed distributions ---------------------------


def _fake_distribution(
    site: Path, name: str, files: dict[str, str], requires: tuple[str, ...] = ()
) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    metadata = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    record = [f"{path},," for path in (*files, f"{info.name}/METADATA", f"{info.name}/RECORD")]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    for path, text in files.items():
        if path.startswith(".."):
            continue  # a script installed outside site-packages: listed, never vendored
        target = site / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    _fake_distribution(
        site,
        "fakeroot",
        {},
        (
            "fake-pure>=1",
            "fake_shared",
            "fake-extra; extra == 'speed'",
            "fake-old; python_version < '3.0'",
            "fake-native; python_version >= '3.0'",
        ),
    )
    _fake_distribution(site, "fake_pure", {"fake_pure/__init__.py": ""}, ("fake-shared",))
    _fake_distribution(site, "fake_shared", {"fake_shared.py": "", "../../bin/tool": ""})
    _fake_distribution(
        site,
        "fake_native",
        {"fake_native/__init__.py": "", "fake_native/_speed.cpython-311-x86_64-linux-gnu.so": ""},
    )
    _fake_distribution(site, "fake_empty", {"fake_empty.pth": ""})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_dependencies_follow_markers_and_skip_extras(fake_site: Path) -> None:
    found = _runtime_dependencies("fakeroot")
    assert [dist.metadata["Name"] for dist in found] == ["fake_native", "fake_pure", "fake_shared"]
    with pytest.raises(PackageError, match="'fake-missing' is not installed"):
        _runtime_dependencies("fake-missing")


def test_compiled_or_empty_dependencies_are_refused(fake_site: Path) -> None:
    found = {dist.metadata["Name"]: dist for dist in _runtime_dependencies("fakeroot")}
    assert [str(path) for path in _distribution_files(found["fake_shared"])] == ["fake_shared.py"]
    with pytest.raises(PackageError, match=r"compiled extension module.*_speed"):
        _distribution_files(found["fake_native"])
    assert _runtime_dependencies("fake_empty") == []
    with pytest.raises(PackageError, match="no importable files"):
        _distribution_files(importlib.metadata.distribution("fake_empty"))


def test_a_dependency_without_a_record_is_refused(tmp_path: Path) -> None:
    info = tmp_path / "norecord-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: norecord\nVersion: 1.0\n")
    with pytest.raises(PackageError, match="does not list its files"):
        _distribution_files(importlib.metadata.PathDistribution(info))


def test_markers_without_packaging_trust_the_environment(fake_site: Path) -> None:
    assert _requirement_applies("fake-pure; python_version < '3.0'", None)
    assert not _requirement_applies("fake-absent; python_version < '3.0'", None)
    assert not _requirement_applies("fake-pure; extra == 'x'", None)
    assert _requirement_applies("fake-pure", None)
    with pytest.raises(PackageError, match="unreadable requirement"):
        _requirement_applies("!!; python_version < '3.0'", None)


# -- the zip runs where only python3 exists ------------------------------------------


def _clean_python_path() -> str:
    if SYSTEM_PYTHON.exists():
        return "/usr/bin:/bin"
    return f"{Path(sys.executable).parent}:/usr/bin:/bin"  # pragma: no cover - no system python


def test_zip_runs_under_a_clean_interpreter(greeter_zip: Path, tmp_path: Path) -> None:
    agent = StandinAgent(lib=tmp_path / "lib", log_root=tmp_path / "log")
    handler_dir = agent.extract(greeter_zip)
    agent.write_settings(handler_dir, 0, {"greeting": "hello"}, {"token": "s3cret"})
    env = [
        "env",
        "-i",
        f"PATH={_clean_python_path()}",
        "ConfigSequenceNumber=0",
        f"AZURE_GUEST_AGENT_EXTENSION_PATH={handler_dir}",
        "AZURE_GUEST_AGENT_EXTENSION_VERSION=1.0.0",
    ]
    # From another cwd on purpose: the shim must find its handler dir by itself.
    completed = subprocess.run(
        [*env, "/bin/sh", "-c", f"{handler_dir}/bin/enable"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    status = read_status(handler_dir, 0)
    assert status is not None
    assert status["status"]["status"] == "success"
    assert status["status"]["formattedMessage"]["message"] == "hello from 1.0.0 at seq 0"
    origins: dict[str, Any] = {
        entry["name"]: entry["formattedMessage"]["message"]
        for entry in status["status"]["substatus"]
    }
    interpreter, *modules = origins["Origins"].splitlines()
    if SYSTEM_PYTHON.exists():
        assert interpreter == str(SYSTEM_PYTHON)
    for module in modules:
        assert module.startswith(f"{handler_dir}/lib/"), module


def test_shim_without_python_exits_52(greeter_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(greeter_zip) as archive:
        archive.extractall(tmp_path)
    completed = subprocess.run(
        ["env", "-i", "PATH=/nonexistent", "/bin/sh", "bin/enable"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 52
    assert "Python >= 3.11 (python3 or python) not found" in completed.stderr


def _fake_interpreter(directory: Path, name: str, banner: str, calls: Path) -> None:
    """An executable that answers `--version` with `banner` (on stderr, as Python 2 did)
    and records every other call."""
    script = directory / name
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "{banner}" >&2; exit 0; fi\n'
        f'echo "{name} $*" >> {calls}\n'
    )
    script.chmod(0o755)


def _run_shim_with(
    greeter_zip: Path, tmp_path: Path, python3: str, python: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`bin/enable` with only fake `python3`/`python` (answering these banners) on PATH;
    the run and the file recording what was run."""
    with zipfile.ZipFile(greeter_zip) as archive:
        archive.extractall(tmp_path / "handler")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    calls = tmp_path / "calls.log"
    _fake_interpreter(fakes, "python3", python3, calls)
    _fake_interpreter(fakes, "python", python, calls)
    completed = subprocess.run(
        ["env", "-i", f"PATH={fakes}:/bin", "/bin/sh", "bin/enable"],
        cwd=tmp_path / "handler",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return completed, calls


@pytest.mark.parametrize("banner", ["Python 3.10.12", "Python 3.9.18", "Python 2.7.18"])
def test_shim_never_runs_an_interpreter_older_than_3_11(
    greeter_zip: Path, tmp_path: Path, banner: str
) -> None:
    completed, calls = _run_shim_with(greeter_zip, tmp_path, banner, "Python 3.1")
    assert completed.returncode == 52, completed.stderr
    assert not calls.exists()  # asked for its version, never run


@pytest.mark.parametrize("banner", ["Python 3.11.4", "Python 3.13.0rc1", "Python 3.20.1"])
def test_shim_takes_a_new_enough_interpreter(
    greeter_zip: Path, tmp_path: Path, banner: str
) -> None:
    completed, calls = _run_shim_with(greeter_zip, tmp_path, "Python 3.10.0", banner)
    assert completed.returncode == 0, completed.stderr
    assert calls.read_text().split()[:4] == ["python", "-s", "-m", "exthandler_sdk"]
