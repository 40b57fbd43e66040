"""Installs and enables N in-process no-op extensions through the Python API (one run).

Run by bench_inprocess.py as a child process: `python inprocess_worker.py N STATE_DIR`.
Prints one JSON line: how long the apply took and how many extensions succeeded.

With `sdk` after STATE_DIR it then times the SDK alone: each handler's install and enable
of a new sequence number (the two operations the apply ran), called directly
(`run_operation`) on the dirs the apply laid out, one after the other, with no runtime
around them (`sdk_seconds` in the line).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from exthandler_sdk import Handler, Operation, run_operation

from exthandler import RuntimeConfig, open_runtime, parse_goal_state


class Noop(Handler[None, None]):
    """Does nothing: every operation succeeds at once."""

    name = "Bench.Noop"
    version = "1.0.0"


def handlers(count: int) -> list[type[Handler[Any, Any]]]:
    return [type(f"Noop{i}", (Noop,), {"name": f"Bench.Noop{i}"}) for i in range(count)]


def goal(count: int) -> bytes:
    extensions = [
        {"name": f"noop{i}", "publisher": "Bench", "type": f"Noop{i}", "typeHandlerVersion": "1.0"}
        for i in range(count)
    ]
    return json.dumps({"id": "bench", "extensions": extensions}).encode()


async def main(count: int, state: Path, sdk: bool = False) -> dict[str, Any]:
    classes = handlers(count)
    document = parse_goal_state(goal(count))
    config = RuntimeConfig(state_dir=state, handlers=classes, load_entry_points=False)
    started = time.perf_counter()
    async with open_runtime(config) as runtime:
        view = await runtime.apply(document)
    seconds = time.perf_counter() - started
    ok = sum(
        1
        for ext in view.extensions
        if ext.handler_state == "Enabled" and ext.statuses[0].code == "ProvisioningState/succeeded"
    )
    result: dict[str, Any] = {"apply_seconds": seconds, "succeeded": ok, "count": count}
    if sdk:
        result["sdk_seconds"] = await sdk_alone(classes, state)
    return result


async def sdk_alone(classes: list[type[Handler[Any, Any]]], state: Path) -> float:
    """Seconds for every handler's install and enable of sequence number 1, run by the SDK
    alone."""
    dirs = [state / f"{cls.name}-{cls.version}" for cls in classes]
    for directory in dirs:
        (directory / "config" / "1.settings").write_bytes(b"")
    env = {"ConfigSequenceNumber": "1"}
    started = time.perf_counter()
    for cls, directory in zip(classes, dirs, strict=True):
        for operation in (Operation.INSTALL, Operation.ENABLE):
            code = await run_operation(cls, operation, handler_dir=directory, env=env)
            if code != 0:
                raise SystemExit(f"{cls.name}: {operation.value} exited {code}")
    return time.perf_counter() - started


if __name__ == "__main__":
    sdk = sys.argv[3:] == ["sdk"]
    print(json.dumps(anyio.run(main, int(sys.argv[1]), Path(sys.argv[2]), sdk)))
