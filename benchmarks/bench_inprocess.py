"""N no-op SDK handlers run in process: installed and enabled into a fresh state dir.

Target (N = 1,000, 2 cores): <= 2 s, with the runtime's durable record writes. Each run is a
fresh interpreter (`inprocess_worker.py`) driving the Python API: the wall figure covers
start-up, handler registration and the apply; the apply alone is shown beside it.

    python benchmarks/bench_inprocess.py [--quick] [--repeat N] [--tmp DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Bench, BenchError, Figure, attempt, main_for

TITLE = "exthandler in-process handlers"
TARGET_N = 1000
TARGET_SECONDS = 2.0
WORKER = Path(__file__).resolve().parent / "inprocess_worker.py"


def _install(bench: Bench, count: int, figure: Figure) -> None:
    applies: list[float] = []
    for attempt_no in range(bench.settings.repeat):
        state = bench.fresh(f"inprocess-{count}-{attempt_no}") / "state"
        run = bench.run_argv([bench.settings.python, str(WORKER), str(count), str(state)])
        run.check_ok("in-process install")
        result = json.loads(run.stdout)
        if result["succeeded"] != count:
            raise BenchError(f"only {result['succeeded']} of {count} extensions succeeded")
        figure.add(run)
        applies.append(result["apply_seconds"])
    figure.extra["apply_only_best_s"] = min(applies)
    figure.note = f"the apply alone: best {min(applies) * 1000:.0f} ms"


def measure(bench: Bench) -> list[Figure]:
    count = 100 if bench.settings.quick else TARGET_N
    figure = Figure(
        key="inprocess_install",
        label=f"install+enable {count} in-process no-op extensions",
        n=count,
        unit="s",
        target=TARGET_SECONDS,
        quick=bench.settings.quick,
    )
    return [attempt(figure, lambda: _install(bench, count, figure))]


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
