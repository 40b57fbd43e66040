"""The SDK pages (docs/sdk/) must not drift from the code: their examples are executed.

Markers in the Markdown, an HTML comment right before a fenced block, say what to do:

- `<!-- test: file PATH -->`: the block is the file PATH of the repository, verbatim.
- `<!-- test: write NAME -->`: the block is written to NAME in the tutorial's work dir.
- `<!-- test: shell -->`: a console session; each `$ COMMAND` line runs (with `sh`, in the
  work dir) and must exit 0 and print the lines below it, up to the next `$ `, once
  volatile parts (timestamps, thumbprints, the work dir) are normalised on both sides
  (and, for `ls`, in any order).
- `<!-- test: exec -->`: Python that must run without error.

The tutorial is one session: the files of examples/hello_sdk/ are copied into a fresh work
dir, then its blocks run in page order. Every python, console and json block of the SDK
pages must carry a marker, so nothing shown goes unchecked.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import exthandler_sdk
import pytest
from exthandler_sdk import Context, Handler

REPO_ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = REPO_ROOT / "docs" / "sdk" / "tutorial.md"
REFERENCE = REPO_ROOT / "docs" / "sdk" / "reference.md"
EXAMPLE = REPO_ROOT / "examples" / "hello_sdk"
COMMAND_TIMEOUT = 120.0

_BLOCK = re.compile(
    r"(?:<!-- test: (?P<kind>[a-z]+)(?: (?P<arg>\S+))? -->\n\s*)?"
    r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_CHECKED_LANGUAGES = frozenset({"python", "console", "json"})
_VOLATILE = [
    (re.compile(r"\b[0-9A-F]{40}\b"), "<THUMBPRINT>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<TIME>"),
]


@attrs.frozen
class Block:
    kind: str | None
    arg: str | None
    lang: str
    body: str
    line: int


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            kind=match["kind"],
            arg=match["arg"],
            lang=match["lang"],
            body=match["body"],
            line=text.count("\n", 0, match.start("body")),
        )
        for match in _BLOCK.finditer(text)
    ]


def normalise(text: str, work_dir: Path | None = None) -> list[str]:
    if work_dir is not None:
        text = text.replace(str(work_dir), "<WORK>")
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return [line.rstrip() for line in text.rstrip("\n").split("\n")] if text.strip() else []


def session(body: str) -> list[tuple[str, str]]:
    """`(command, expected output)` for each `$ ` line of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in steps]


def shell_env() -> dict[str, str]:
    """This interpreter's bin dir first on PATH, so `python` and `exthandler` are ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("EXTHANDLER_STATE_DIR", "EXTHANDLER_REPO", "PYTHONPATH")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_shell(block: Block, work_dir: Path) -> None:
    for command, expected in session(block.body):
        result = subprocess.run(
            command,
            shell=True,
            cwd=work_dir,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        where = f"line {block.line}: $ {command}"
        assert result.returncode == 0, f"{where}\nexit {result.returncode}\n{result.stderr}"
        actual, shown = normalise(result.stdout, work_dir), normalise(expected)
        if command.startswith("ls "):
            # A thumbprint sorts before or after the other names, depending on its digits.
            actual, shown = sorted(actual), sorted(shown)
        assert actual == shown, where


@pytest.mark.parametrize("page", [TUTORIAL, REFERENCE], ids=["tutorial", "reference"])
def test_every_code_block_is_checked(page: Path) -> None:
    found = blocks(page)
    assert found
    for block in found:
        if block.lang in _CHECKED_LANGUAGES:
            assert block.kind in ("file", "write", "shell", "exec"), (
                f"{page.name} line {block.line}: a {block.lang} block without a test marker"
            )
        if block.kind == "shell":
            assert block.lang == "console", f"{page.name} line {block.line}"


@pytest.mark.parametrize("page", [TUTORIAL, REFERENCE], ids=["tutorial", "reference"])
def test_files_shown_are_the_files_in_the_repository(page: Path) -> None:
    for block in blocks(page):
        if block.kind == "file":
            assert block.arg is not None
            shown = block.body
            actual = (REPO_ROOT / block.arg).read_text(encoding="utf-8")
            assert shown == actual, f"{page.name} line {block.line} differs from {block.arg}"


def test_the_tutorial_runs_as_shown(tmp_path: Path) -> None:
    work_dir = tmp_path / "greeter"
    shutil.copytree(EXAMPLE, work_dir, ignore=shutil.ignore_patterns("__pycache__"))
    ran = 0
    for block in blocks(TUTORIAL):
        if block.kind == "write":
            assert block.arg is not None
            (work_dir / block.arg).write_text(block.body, encoding="utf-8")
        elif block.kind == "shell":
            run_shell(block, work_dir)
            ran += 1
        elif block.kind == "exec":
            exec_block(block, work_dir)
    assert ran >= 5


def exec_block(block: Block, work_dir: Path) -> None:
    script = work_dir / f"snippet_{block.line}.py"
    script.write_text(block.body, encoding="utf-8")
    old_cwd = Path.cwd()
    old_path = list(sys.path)
    try:
        os.chdir(work_dir)
        sys.path.insert(0, str(work_dir))
        runpy.run_path(str(script), run_name="__snippet__")
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


def test_the_reference_snippets_run(tmp_path: Path) -> None:
    ran = 0
    for block in blocks(REFERENCE):
        if block.kind == "exec":
            exec_block(block, tmp_path)
            ran += 1
        elif block.kind == "shell":
            run_shell(block, tmp_path)
            ran += 1
    assert ran >= 1


def test_the_reference_names_the_whole_public_api() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for name in exthandler_sdk.__all__:
        assert f"`{name}" in text, f"reference.md does not mention {name}"


def _table_names(text: str, heading: str) -> set[str]:
    """The backquoted names in the first column of the table under `heading`."""
    section = text.split(heading, 1)[1]
    names: set[str] = set()
    started = False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            match = re.match(r"\| `([a-z_]+)", line)
            if match:
                names.add(match.group(1))
        elif started:
            break
    return names


def test_the_context_table_lists_every_attribute() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    fields = {field.name for field in attrs.fields(Context)} - {"clock"}
    assert _table_names(text, "<!-- table: context -->") == fields


def test_the_handler_table_lists_every_class_attribute() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    declared = {name for name in Handler.__annotations__ if not name.startswith("_")}
    assert declared <= _table_names(text, "<!-- table: handler -->")
