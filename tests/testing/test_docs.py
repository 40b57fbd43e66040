"""The examples of docs/testing.md, run as a user would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"```python\n# file: (?P<name>\S+)\.py\n(?P<code>.*?)```", re.DOTALL)


def test_the_examples_of_the_testing_page_pass(pytester: pytest.Pytester) -> None:
    files = {match["name"]: match["code"] for match in BLOCK.finditer(DOC.read_text())}
    assert len(files) == 4
    pytester.makepyfile(**files)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
