"""The README's handler example is real code that runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio

from exthandler import RuntimeConfig, open_runtime, parse_goal_state

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
