"""Upgrade of N installed extensions, each to a new hotfix version (1.0.0 -> 1.0.1).

Target (N = 100): wall <= 2x the sequential floor. Each upgrade runs five commands (old
disable, new update, old uninstall, new install, new enable: docs/protocol.md), so the
floor is `python -c pass` + 5N `/bin/sh -c` commands one after the other, measured right
after each upgrade (the ratio is the median of the runs' own ratios); the concurrent
floor (the 5N commands 8 at a time) is shown beside it.

    python benchmarks/bench_upgrade.py [--quick] [--repeat N]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    BenchError,
    Figure,
    attempt,
    check_commands,
    check_view,
    floor_figure,
    main_for,
    sequential_floor,
    spawn_floor,
)

TITLE = "exthandler upgrade"
TARGET_N = 100
TARGET_RATIO = 2.0
OPS = (
    ("disable", "1.0.0"),
    ("update", "1.0.1"),
    ("uninstall", "1.0.0"),
    ("install", "1.0.1"),
    ("enable", "1.0.1"),
)


def measure(bench: Bench) -> list[Figure]:
    bench.warm_up()
    quick = bench.settings.quick
    count = 20 if quick else TARGET_N
    old_repo = bench.repo(count, ["1.0.0"])
    new_repo = bench.repo(count, ["1.0.0", "1.0.1"])
    goal = bench.goal(count)
    wall = Figure(
        key="upgrade_wall",
        label=f"upgrade {count} extensions 1.0.0 -> 1.0.1",
        n=count,
        unit="s",
        ratio_target=TARGET_RATIO,
        quick=quick,
    )

    sequential = Figure(
        key="upgrade_sequential_floor",
        label=f"sequential floor: python -c pass + {5 * count} x /bin/sh -c, one at a time",
        n=count,
        unit="s",
    )
    wall.floor = sequential

    def run() -> None:
        for attempt_no in range(bench.settings.repeat):
            work = bench.fresh("upgrade")
            state = work / "state"
            setup_log = work / "setup.log"
            setup = bench.apply(goal, state, old_repo, setup_log)  # untimed
            check_view(setup, count, "1.0.0", "upgrade setup")
            log = work / "commands.log"
            result = bench.apply(goal, state, new_repo, log)
            what = f"upgrade run {attempt_no + 1}"
            check_view(result, count, "1.0.1", what)
            check_commands(log, dict.fromkeys(OPS, count), what)
            left = sorted(p.name for p in state.glob("Bench.Ext*-1.0.0"))
            if left:
                raise BenchError(f"{what}: old handler dirs left behind: {left[:3]}")
            wall.add(result)
            floor_now = sequential_floor(bench, count, OPS)  # right after: its pair
            sequential.samples.append(floor_now)
            wall.add_pair_floor(floor_now)
            wall.extra["peak_rss_mib"] = max(
                wall.extra.get("peak_rss_mib", 0.0), result.max_rss_kib / 1024
            )

    attempt(wall, run)
    floor = floor_figure(
        bench,
        key="upgrade_spawn_floor",
        label=f"spawn floor: {5 * count} x /bin/sh -c, {bench.settings.concurrency} at a time",
        n=count,
        measure_once=lambda: spawn_floor(bench, count, OPS, bench.settings.concurrency),
    )
    if wall.median is not None and floor.median is not None:
        overhead = wall.median - floor.median
        wall.extra["overhead_over_floor_s"] = overhead
        wall.note = (
            f"median {wall.median * 1000:.0f} ms = spawn floor {floor.median * 1000:.0f} ms"
            f" + {overhead * 1000:.0f} ms of runtime; peak RSS"
            f" {wall.extra['peak_rss_mib']:.1f} MiB"
        )
    return [wall, sequential, floor]


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
