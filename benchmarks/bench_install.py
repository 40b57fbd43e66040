"""Fresh install+enable of N extensions into a fresh state dir, its peak RSS, and its floor.

Targets (N = 100): wall <= 2x the sequential floor (`python -c pass` + the same 2N
`/bin/sh -c` commands one after the other, measured in the same run, right after each
install: the ratio is the median of the runs' own ratios); the CLI process's peak RSS
<= 60 MiB. The concurrent floor (the 2N commands 8 at a time) is shown beside it.

    python benchmarks/bench_install.py [--quick] [--repeat N]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    Figure,
    attempt,
    check_commands,
    check_view,
    floor_figure,
    main_for,
    sequential_floor,
    spawn_floor,
)

TITLE = "exthandler fresh install"
TARGET_N = 100
TARGET_RATIO = 2.0
TARGET_RSS_MIB = 60.0
OPS = (("install", "1.0.0"), ("enable", "1.0.0"))


def measure(bench: Bench) -> list[Figure]:
    bench.warm_up()
    quick = bench.settings.quick
    count = 20 if quick else TARGET_N
    repo = bench.repo(count, ["1.0.0"])
    goal = bench.goal(count)
    wall = Figure(
        key="install_wall",
        label=f"install+enable {count} extensions (fresh state dir)",
        n=count,
        unit="s",
        ratio_target=TARGET_RATIO,
        quick=quick,
    )
    rss = Figure(
        key="install_peak_rss",
        label=f"peak RSS of the CLI, {count} extensions",
        n=count,
        unit="MiB",
        target=TARGET_RSS_MIB,
        quick=quick,
    )

    sequential = Figure(
        key="install_sequential_floor",
        label=f"sequential floor: python -c pass + {2 * count} x /bin/sh -c, one at a time",
        n=count,
        unit="s",
    )
    wall.floor = sequential

    def run() -> None:
        for attempt_no in range(bench.settings.repeat):
            work = bench.fresh("install")
            log = work / "commands.log"
            result = bench.apply(goal, work / "state", repo, log)
            what = f"install run {attempt_no + 1}"
            check_view(result, count, "1.0.0", what)
            check_commands(log, dict.fromkeys(OPS, count), what)
            wall.add(result)
            floor_now = sequential_floor(bench, count, OPS)  # right after: its pair
            sequential.samples.append(floor_now)
            wall.add_pair_floor(floor_now)
            rss.samples.append(result.max_rss_kib / 1024)

    attempt(wall, run)
    if wall.error:
        rss.error = wall.error
    floor = floor_figure(
        bench,
        key="install_spawn_floor",
        label=f"spawn floor: {2 * count} x /bin/sh -c, {bench.settings.concurrency} at a time",
        n=count,
        measure_once=lambda: spawn_floor(bench, count, OPS, bench.settings.concurrency),
    )
    if wall.median is not None and floor.median is not None:
        overhead = wall.median - floor.median
        wall.extra["overhead_over_floor_s"] = overhead
        wall.note = (
            f"median {wall.median * 1000:.0f} ms = spawn floor {floor.median * 1000:.0f} ms"
            f" + {overhead * 1000:.0f} ms of runtime (start-up included)"
        )
    if rss.median is not None:
        rss.note = "max over runs: " + f"{max(rss.samples):.1f} MiB (ru_maxrss via wait4)"
    return [wall, rss, sequential, floor]


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
