"""Re-apply of an unchanged goal state to N already installed extensions.

Target (N = 1,000, 2 cores): wall <= 0.5 s. Re-applying runs no command at all, so this
is pure runtime cost: start-up, reading the state, planning, writing the view. The same
figure at N = 100 is shown beside it to separate the fixed cost from the per-extension one.

    python benchmarks/bench_reapply.py [--quick] [--repeat N]
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
    main_for,
)

TITLE = "exthandler re-apply"
TARGET_N = 1000
TARGET_SECONDS = 0.5


def _reapply(bench: Bench, count: int, figure: Figure) -> None:
    repo = bench.repo(count, ["1.0.0"])
    goal = bench.goal(count)
    work = bench.fresh(f"reapply-{count}")
    state = work / "state"
    log = work / "setup.log"
    setup = bench.apply(goal, state, repo, log)  # untimed: the installation to re-apply to
    check_view(setup, count, "1.0.0", "re-apply setup")
    check_commands(log, {("install", "1.0.0"): count, ("enable", "1.0.0"): count}, "setup")
    figure.extra["setup_install_s"] = setup.seconds
    for attempt_no in range(bench.settings.repeat):
        log = work / f"reapply-{attempt_no}.log"
        result = bench.apply(goal, state, repo, log)
        what = f"re-apply run {attempt_no + 1}"
        check_view(result, count, "1.0.0", what)
        check_commands(log, {}, what)  # unchanged goal state: no command may run
        figure.add(result)
        figure.extra["peak_rss_mib"] = max(
            figure.extra.get("peak_rss_mib", 0.0), result.max_rss_kib / 1024
        )


def measure(bench: Bench) -> list[Figure]:
    bench.warm_up()
    quick = bench.settings.quick
    count = 100 if quick else TARGET_N
    figures = []
    main_figure = Figure(
        key="reapply_wall",
        label=f"re-apply, {count} unchanged extensions",
        n=count,
        unit="s",
        target=TARGET_SECONDS,
        quick=quick,
    )
    figures.append(attempt(main_figure, lambda: _reapply(bench, count, main_figure)))
    if not quick:
        small = Figure(
            key="reapply_wall_100", label="re-apply, 100 unchanged extensions", n=100, unit="s"
        )
        figures.append(attempt(small, lambda: _reapply(bench, 100, small)))
    for fig in figures:
        if fig.samples:
            fig.note = (
                f"setup install took {fig.extra['setup_install_s']:.1f} s;"
                f" peak RSS {fig.extra['peak_rss_mib']:.1f} MiB"
            )
    return figures


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
