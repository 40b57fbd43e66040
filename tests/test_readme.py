"""The README's handler example is real code that runs; its commands are the CLI's."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import anyio

from exthandler import RuntimeConfig, open_runtime, parse_goal_state
from exthandler._cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_handler_example_runs_in_process(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "class Hello(Handler" in b)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, "README.md", "exec"), namespace)
    hello = namespace["Hello"]
    goal = {
        "extensions": [
            {
                "name": "hello",
                "publisher": "Contoso.Samples",
                "type": "Hello",
                "typeHandlerVersion": "1.0",
                "settings": {"message": "hi there"},
            },
            {
                "name": "empty",
                "publisher": "Contoso.Samples",
                "type": "Hello",
                "typeHandlerVersion": "1.0",
                "settings": {"message": ""},
            },
        ]
    }
    # One handler, two single-config extensions is invalid: apply them one at a time.
    for document, code, message in (
        ({"extensions": goal["extensions"][:1]}, "ProvisioningState/succeeded", "hi there"),
        ({"extensions": goal["extensions"][1:]}, "ProvisioningState/failed/53", "must not"),
    ):
        config = RuntimeConfig(
            state_dir=tmp_path / code.replace("/", "-"), handlers=[hello], load_entry_points=False
        )

        async def main(doc: dict[str, Any] = document, cfg: RuntimeConfig = config) -> Any:
            async with open_runtime(cfg) as runtime:
                return await runtime.apply(parse_goal_state(json.dumps(doc)))

        view = anyio.run(main)
        status = view.extensions[0].statuses[0]
        assert status.code == code
        assert message in status.message


def _commands() -> list[str]:
    """Every line of the README's `sh` blocks, and the commands quoted in its text."""
    text = README.read_text()
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
    ]
    quoted = re.findall(r"`(uv run [^`]*)`", text.replace("\n", " "))
    return [*lines, *quoted]


def test_the_readme_commands_are_what_the_cli_takes() -> None:
    invocations = []
    for line in _commands():
        command = line.split("#", 1)[0].split("&&")[-1].strip()
        words = shlex.split(command)
        if "exthandler" in words:
            invocations.append(words)
            # The tool alone, never the development tools.
            assert words[:3] == ["uv", "run", "--no-dev"], line
            argv = words[words.index("exthandler") + 1 :]
            if "--help" in argv:
                continue
            build_parser().parse_args(argv)  # exits 2 on an option the CLI does not take
    assert len(invocations) >= 8
    first = _commands()[0]
    assert first.startswith("pip install uv && uv run --no-dev exthandler apply ")
    assert "pip install uv && uv run pytest --cov" in _commands()
