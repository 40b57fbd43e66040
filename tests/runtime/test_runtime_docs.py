"""The runtime page's examples marked `<!-- test: exec -->` run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"
_BLOCK = re.compile(r"<!-- test: exec -->\n```python\n(.*?)```", re.DOTALL)


def blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text())


def test_the_page_has_executable_examples() -> None:
    assert blocks(), "docs/runtime.md lost its tested examples"


@pytest.mark.parametrize("index", range(len(blocks())))
def test_example_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = blocks()[index].replace("/tmp/exthandler-memory", str(tmp_path / "state"))
    script = tmp_path / "example.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "Enabled" in out
    assert out.count("ran") == 2  # install and enable ran, as real processes
