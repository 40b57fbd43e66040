"""Times the parts of a pass that grow with N, for N in-process no-op extensions (one run).

Run by bench_scale.py as a child process: `python scale_worker.py N STATE_DIR`. Prints one
JSON line of seconds per part:

- parse: `parse_goal_state` of an N-extension native goal state;
- journal: loading the records right after the pass that installed the N handlers
  (replaying N journal lines over the snapshot, then the compaction);
- plan: `Runtime.plan` of the same goal on the installed state (resolution, dependency
  order, every step's reason);
- reapply: `Runtime.apply` of the same goal again (nothing runs; every dependency is
  looked up);
- view: composing the instance view of N extensions and its JSON document, then
  reading that document back as `exthandler status` does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.inprocess_worker import handlers
from exthandler import RuntimeConfig, open_runtime, parse_goal_state, read_instance_view
from exthandler._state.store import Store


def goal(count: int) -> bytes:
    """N no-op extensions, each after the one before it (`provisionAfterExtensions`)."""
    extensions = [
        {
            "name": f"noop{i}",
            "publisher": "Bench",
            "type": f"Noop{i}",
            "typeHandlerVersion": "1.0",
            "provisionAfterExtensions": [f"noop{i - 1}"] if i else [],
        }
        for i in range(count)
    ]
    return json.dumps({"id": "bench", "extensions": extensions}).encode()


async def main(count: int, state: Path) -> dict[str, Any]:
    classes = handlers(count)
    raw = goal(count)
    started = time.perf_counter()
    document = parse_goal_state(raw)
    parse = time.perf_counter() - started
    config = RuntimeConfig(state_dir=state, handlers=classes, load_entry_points=False)
    async with open_runtime(config) as runtime:
        await runtime.apply(document)
    store = Store(root=state, log_root=state / "log")
    store.acquire()
    try:
        started = time.perf_counter()
        records = store.load_records()
        journal = time.perf_counter() - started
        store.journal.close()
    finally:
        store.release()
    if len(records) != count:
        raise SystemExit(f"{len(records)} records, expected {count}")
    async with open_runtime(config) as runtime:
        started = time.perf_counter()
        plan = await runtime.plan(document)
        planned = time.perf_counter() - started
        if plan.steps:
            raise SystemExit(f"the plan of an unchanged goal has {len(plan.steps)} steps")
        started = time.perf_counter()
        await runtime.apply(document)
        reapplied = time.perf_counter() - started
        started = time.perf_counter()
        text = json.dumps(runtime.instance_view().to_json())
        view = read_instance_view(state)
        viewed = time.perf_counter() - started
    if view is None or len(view.extensions) != count or not text:
        raise SystemExit("the instance view does not show every extension")
    return {
        "count": count,
        "parse": parse,
        "journal": journal,
        "plan": planned,
        "reapply": reapplied,
        "view": viewed,
    }


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, int(sys.argv[1]), Path(sys.argv[2]))))
