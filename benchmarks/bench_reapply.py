"""Re-apply of an unchanged goal state to N already installed extensions.

Re-applying runs no command at all, so this is pure runtime cost. After the install, one
re-apply (untimed) is the whole pass that finds nothing to do and stamps it; the timed
re-applies are then quiet passes (one stat per input, the view shown again: see
docs/runtime.md, "Quiet passes"), and the same number of whole passes (`--full-pass`:
start-up, reading the state, planning) is shown beside each. Targets are multiples of
`python -c pass` measured in the same run:

- N = 1,000: <= 10x; its peak RSS <= 45 MiB;
- N = 10 (a small machine: the fixed cost every pass pays): <= 5x;
- N = 10,000: <= 100x (full runs only: its set-up installs 10,000 packages).

N = 100 is shown beside them, and the growth per extension from the smallest N to the
largest, so that a cost growing faster than N shows.

    python benchmarks/bench_reapply.py [--quick] [--repeat N]
"""

from __future__ import annotations

import sys
import time
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
    interpreter_floor,
    main_for,
    python_pass,
)

TITLE = "exthandler re-apply"
TARGET_N = 1000
TARGET_RATIO = 10.0
SMALL_N = 10
SMALL_RATIO = 5.0
LARGE_N = 10_000
LARGE_RATIO = 100.0
LARGE_REPEAT = 3
TARGET_RSS_MIB = 45.0


def _reapply(
    bench: Bench, count: int, figure: Figure, repeat: int, whole: Figure | None = None
) -> None:
    """Install `count` extensions (untimed), re-apply once (untimed: the whole pass that
    finds nothing to do and stamps it), then time `repeat` re-applies (quiet passes) into
    `figure` and, with `whole`, `repeat` whole passes (`--full-pass`) into it."""
    repo = bench.repo(count, ["1.0.0"])
    goal = bench.goal(count)
    work = bench.fresh(f"reapply-{count}")
    state = work / "state"
    log = work / "setup.log"
    setup = bench.apply(goal, state, repo, log)  # untimed: the installation to re-apply to
    check_view(setup, count, "1.0.0", "re-apply setup")
    check_commands(log, {("install", "1.0.0"): count, ("enable", "1.0.0"): count}, "setup")
    figure.extra["setup_install_s"] = setup.seconds
    figure.extra["setup_peak_rss_mib"] = setup.max_rss_kib / 1024
    time.sleep(0.2)  # files written in the last clock ticks are not vouched for
    log = work / "stamping.log"
    stamping = bench.apply(goal, state, repo, log)
    check_view(stamping, count, "1.0.0", "the stamping re-apply")
    check_commands(log, {}, "the stamping re-apply")
    if not (state / ".exthandler" / "quiet-pass.json").is_file():
        raise BenchError("the re-apply that found nothing to do left no quiet-pass stamp")
    figure.extra["stamping_pass_s"] = stamping.seconds
    runs: list[tuple[Figure, tuple[str, ...]]] = [(figure, ())] * repeat
    if whole is not None:
        runs += [(whole, ("--full-pass",))] * repeat
    for attempt_no, (into, extra) in enumerate(runs):
        log = work / f"reapply-{attempt_no}.log"
        result = bench.apply(goal, state, repo, log, extra)
        what = f"re-apply run {attempt_no + 1}{' (whole)' if extra else ''}"
        check_view(result, count, "1.0.0", what)
        check_commands(log, {}, what)  # unchanged goal state: no command may run
        into.add(result)
        into.add_pair_floor(python_pass(bench))  # right after: this run's floor
        into.extra["peak_rss_mib"] = max(
            into.extra.get("peak_rss_mib", 0.0), result.max_rss_kib / 1024
        )


def growth_note(figures: list[Figure]) -> str:
    """Microseconds per extension at each N, and the largest N's over the smallest's."""
    measured = sorted((f for f in figures if f.median is not None), key=lambda f: f.n)
    if len(measured) < 2:
        return ""
    per = [(f.n, f.median / f.n * 1e6) for f in measured if f.median is not None]
    steps = ", ".join(f"{n}: {us:.0f} us" for n, us in per)
    factor = per[-1][1] / per[0][1]
    return f"per extension {steps}; {factor:.2f}x from N={per[0][0]} to N={per[-1][0]}"


def measure(bench: Bench) -> list[Figure]:
    bench.warm_up()
    quick = bench.settings.quick
    repeat = bench.settings.repeat
    count = 100 if quick else TARGET_N
    floor = interpreter_floor(bench, "reapply_python_floor")

    def figure(key: str, n: int, ratio: float | None, label: str) -> Figure:
        return Figure(
            key=key, label=label, n=n, unit="s", ratio_target=ratio, floor=floor, quick=quick
        )

    main_figure = figure(
        "reapply_wall", count, TARGET_RATIO, f"re-apply, {count} unchanged extensions"
    )
    small = figure(
        "reapply_wall_small",
        SMALL_N,
        SMALL_RATIO,
        f"a small machine: re-apply, {SMALL_N} unchanged extensions",
    )
    small_whole = figure(
        "reapply_whole_small", SMALL_N, None, f"  the same, whole passes (--full-pass), {SMALL_N}"
    )
    main_whole = figure(
        "reapply_whole", count, None, f"  the same, whole passes (--full-pass), {count}"
    )
    figures = [floor]
    figures.append(attempt(small, lambda: _reapply(bench, SMALL_N, small, repeat, small_whole)))
    figures.append(small_whole)
    figures.append(
        attempt(main_figure, lambda: _reapply(bench, count, main_figure, repeat, main_whole))
    )
    figures.append(main_whole)
    rss = Figure(
        key="reapply_peak_rss",
        label=f"peak RSS, re-apply of {count} extensions",
        n=count,
        unit="MiB",
        target=TARGET_RSS_MIB,
        quick=quick,
    )
    if main_figure.error:
        rss.error = main_figure.error
    elif "peak_rss_mib" in main_figure.extra:
        quiet_rss = main_figure.extra["peak_rss_mib"]
        whole_rss = main_whole.extra.get("peak_rss_mib", quiet_rss)
        rss.samples.append(max(quiet_rss, whole_rss))
        rss.note = (
            f"ru_maxrss via wait4, largest over the re-apply runs, quiet ({quiet_rss:.1f} MiB)"
            f" and whole ({whole_rss:.1f} MiB); the installing pass:"
            f" {main_figure.extra['setup_peak_rss_mib']:.1f} MiB"
        )
    figures.append(rss)
    scale = [small, main_figure]
    if not quick:
        hundred = figure("reapply_wall_100", 100, None, "re-apply, 100 unchanged extensions")
        figures.append(attempt(hundred, lambda: _reapply(bench, 100, hundred, repeat)))
        large = figure(
            "reapply_wall_large",
            LARGE_N,
            LARGE_RATIO,
            f"re-apply, {LARGE_N:,} unchanged extensions",
        )
        large_whole = figure(
            "reapply_whole_large",
            LARGE_N,
            None,
            f"  the same, whole passes (--full-pass), {LARGE_N:,}",
        )
        runs = min(repeat, LARGE_REPEAT)
        figures.append(attempt(large, lambda: _reapply(bench, LARGE_N, large, runs, large_whole)))
        figures.append(large_whole)
        scale += [hundred, large]
    for fig in scale:
        if fig.samples:
            fig.note = (
                f"setup install took {fig.extra['setup_install_s']:.1f} s; the whole pass that"
                f" stamped it {fig.extra['stamping_pass_s'] * 1000:.0f} ms (untimed);"
                f" peak RSS {fig.extra['peak_rss_mib']:.1f} MiB"
            )
    growth = growth_note([f for f in scale if f is not small])
    if growth:
        main_figure.note += f"; growth: {growth}"
    return figures


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
