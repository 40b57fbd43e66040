"""What the quick commands import: every CLI call pays its imports, so the event loop,
the engine, the plugins and the converters load only in the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exthandler._cli import run
from exthandler._cli.main import main

ROOT = Path(__file__).resolve().parents[2]
# Loaded by apply and run; never by --version, status or (for most goals) validate.
RUNTIME_ONLY = (
    "anyio",
    "asyncio",
    "cattrs",
    "cryptography",
    "pluggy",
    "exthandler._engine",
    "exthandler._executors",
    "exthandler._packages",
    "exthandler._plugins",
)


def imported_by(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after running the CLI with `argv`."""
    script = (
        "import contextlib, io, json, sys\n"
        "from exthandler._cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = run({argv!r})\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    code, modules = json.loads(done.stdout.splitlines()[-1])
    assert code == 0, done.stderr
    return set(modules)


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes))


def test_importing_the_packages_loads_none_of_their_parts() -> None:
    script = (
        "import json, sys\n"
        "import exthandler, exthandler_sdk, exthandler_sdk.protocol, exthandler._cli.main\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    modules = set(json.loads(done.stdout))
    assert loaded(modules, (*RUNTIME_ONLY, "attr", "attrs", "exthandler._runtime")) == []


def test_version_imports_neither_the_parser_nor_the_runtime() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "exthandler", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "exthandler" in modules
    assert loaded(modules, (*RUNTIME_ONLY, "argparse", "attr", "exthandler._cli.main")) == []


def test_the_quick_version_says_what_the_parser_says(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from_parser = capsys.readouterr().out
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == from_parser


def test_status_reads_the_view_without_the_runtime(tmp_path: Path) -> None:
    view = {"goalStateId": "g", "extensions": []}
    (tmp_path / ".exthandler").mkdir()
    (tmp_path / ".exthandler" / "instance-view.json").write_text(json.dumps(view))
    modules = imported_by(["status", "--state-dir", str(tmp_path), "--json"])
    assert "exthandler._report.view" in modules
    # The view's value classes need no attrs either: status is all start-up.
    assert loaded(modules, (*RUNTIME_ONLY, "attr", "attrs", "exthandler._runtime")) == []


def test_validate_of_a_goal_without_shared_handlers_needs_no_event_loop() -> None:
    modules = imported_by(["validate", str(ROOT / "examples" / "goal.json")])
    assert "exthandler._goalstate._native" in modules
    # Neither the runtime nor the XML parser; the project's own converter, not cattrs.
    assert loaded(modules, (*RUNTIME_ONLY, "defusedxml")) == []


def test_applying_classic_packages_builds_no_attrs_class(tmp_path: Path) -> None:
    """Every class `apply` loads is a `Value` or a plain class: attrs (and the classes it
    would build at import) are left to the SDK's settings and the plugins."""
    modules = imported_by(
        [
            "apply",
            str(ROOT / "examples" / "goal.json"),
            "--repo",
            str(ROOT / "examples" / "repo"),
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert "exthandler._engine.engine" in modules
    assert loaded(modules, ("attr", "attrs", "cattrs")) == []
