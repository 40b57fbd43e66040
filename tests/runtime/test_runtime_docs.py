"""The examples of the runtime and embedding pages marked `<!-- test: exec -->` run as
written; a ```text block right after one is its exact output."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("runtime.md", "embedding.md")
_BLOCK = re.compile(
    r"<!-- test: exec -->\n```python\n(?P<code>.*?)```\n(?:\n```text\n(?P<out>.*?)```)?",
    re.DOTALL,
)
_STATE = re.compile(r'"/tmp/exthandler-[a-z]+"')


def examples() -> list[tuple[str, int, str, str | None]]:
    found = []
    for page in PAGES:
        for index, match in enumerate(_BLOCK.finditer((DOCS / page).read_text())):
            found.append((page, index, match["code"], match["out"]))
    return found


def test_each_page_has_executable_examples() -> None:
    assert {page for page, *_ in examples()} == set(PAGES)


@pytest.mark.parametrize(
    ("page", "index", "code", "expected"),
    examples(),
    ids=[f"{page}-{index}" for page, index, *_ in examples()],
)
def test_example_runs(
    page: str,
    index: int,
    code: str,
    expected: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = tmp_path / "example.py"
    script.write_text(_STATE.sub(repr(str(tmp_path / "state")), code))
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    if expected is not None:
        assert out == expected
    else:  # the runtime page's source example prints the handler state and its runs
        assert "Enabled" in out
        assert out.count("ran") == 2
