"""N no-op SDK handlers run in process: installed and enabled into a fresh state dir.

Target (N = 1,000): <= 2x the file floor (the same mkdirs and atomic writes done by a bare
loop, measured in the same run), with the runtime's durable record writes. Each run is a
fresh interpreter (`inprocess_worker.py`) driving the Python API: the wall figure covers
start-up, handler registration and the apply; the apply alone is shown beside it, and so
is the SDK alone (the same installs and enables called directly, no runtime), so that the
note can split the figure into start-up, the handlers' own work and the runtime's share.

    python benchmarks/bench_inprocess.py [--quick] [--repeat N] [--tmp DIR]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Bench, BenchError, Figure, attempt, floor_figure, main_for

TITLE = "exthandler in-process handlers"
TARGET_N = 1000
TARGET_RATIO = 2.0
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
        figure.add_pair_floor(file_floor(bench, count))  # right after: this run's floor
        applies.append(result["apply_seconds"])
    figure.extra["apply_only_best_s"] = min(applies)
    figure.note = f"the apply alone: best {min(applies) * 1000:.0f} ms"


def file_floor(bench: Bench, count: int) -> float:
    """Seconds for about the file work of `count` in-process extensions, in this process.

    Per extension: the handler dir with config/ and status/, a log dir with events/ (five
    mkdirs), and ten small files each written to a temp name and renamed into place
    (manifest, HandlerEnvironment.json, settings, two HandlerState, the status, mrseq, the
    run-once lock, two logs): what the runtime and the SDK write for one install and
    enable, with no Python around it but the loop. It shows what this disk charges.
    """
    base = bench.fresh("file-floor")
    start = time.perf_counter()
    for i in range(count):
        directory = base / f"Bench.Noop{i}-1.0.0"
        logs = base / "log" / f"Bench.Noop{i}"
        places = [directory, directory / "config", directory / "status", logs, logs / "events"]
        for place in places:
            place.mkdir(parents=True)
        targets = [directory] * 3 + [directory / "config"] * 4 + [directory / "status"]
        targets += [logs] * 2
        for index, place in enumerate(targets):
            temp = os.path.join(place, f".f{index}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"{}")
            os.close(fd)
            os.replace(temp, os.path.join(place, f"f{index}"))
    return time.perf_counter() - start  # the files stay until the end (see create_cost)


def sdk_alone(bench: Bench, count: int) -> float:
    """Seconds for `count` installs and enables run by the SDK alone (see
    `inprocess_worker.sdk_alone`): the handlers' own share of the figure, which no runtime
    can take away."""
    state = bench.fresh(f"inprocess-sdk-{count}") / "state"
    run = bench.run_argv([bench.settings.python, str(WORKER), str(count), str(state), "sdk"])
    run.check_ok("in-process install and the SDK alone")
    return float(json.loads(run.stdout)["sdk_seconds"])


def measure(bench: Bench) -> list[Figure]:
    count = 100 if bench.settings.quick else TARGET_N
    figure = Figure(
        key="inprocess_install",
        label=f"install+enable {count} in-process no-op extensions",
        n=count,
        unit="s",
        ratio_target=TARGET_RATIO,
        quick=bench.settings.quick,
    )
    attempt(figure, lambda: _install(bench, count, figure))
    floor = floor_figure(
        bench,
        key="inprocess_file_floor",
        label=f"file floor: {count} x (5 mkdir + 10 atomic writes)",
        n=count,
        measure_once=lambda: file_floor(bench, count),
    )
    sdk = floor_figure(
        bench,
        key="inprocess_sdk_alone",
        label=f"  the SDK alone: {count} installs+enables by run_operation, no runtime",
        n=count,
        measure_once=lambda: sdk_alone(bench, count),
    )
    figure.floor = floor
    if figure.median is not None and floor.median is not None:
        figure.note += (
            f"; file floor {floor.median * 1000:.0f} ms (what this disk charges for the"
            " files alone)"
        )
    if figure.best is not None and sdk.median is not None:
        apply = figure.extra["apply_only_best_s"]
        figure.note += (
            f"; of the best run, start-up {(figure.best - apply) * 1000:.0f} ms (interpreter,"
            f" imports, registration), the SDK's own installs and enables about"
            f" {sdk.median * 1000:.0f} ms, the runtime's share about"
            f" {(apply - sdk.median) * 1000:.0f} ms"
        )
    return [figure, floor, sdk]


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
