"""Scale: `exthandler validate` of a 10,000-extension goal, and how a pass grows with N.

Target: validate of 10,000 extensions <= 20x `python -c pass` measured in the same run.
The growth figures time the parts of a pass that see every extension (parse, journal
replay and compaction, plan, an in-process re-apply with a dependency per extension, view;
see scale_worker.py) at N = 100, 1,000 and 10,000 in
a fresh interpreter each: a part whose cost per extension grows with N is quadratic
somewhere, and its note says by how much.

    python benchmarks/bench_scale.py [--quick] [--repeat N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    BenchError,
    Figure,
    attempt,
    interpreter_floor,
    main_for,
    python_pass,
)

TITLE = "exthandler scale"
VALIDATE_N = 10_000
VALIDATE_RATIO = 20.0
GROWTH_NS = (100, 1000, 10_000)
QUICK_GROWTH_NS = (100, 1000)
PARTS = ("parse", "journal", "plan", "reapply", "view")
# Per-extension cost at the largest N over that at the smallest: above this, say so.
LINEAR_SLACK = 2.0
WORKER = Path(__file__).resolve().parent / "scale_worker.py"


def measure(bench: Bench) -> list[Figure]:
    bench.warm_up()
    quick = bench.settings.quick
    floor = interpreter_floor(bench, "scale_python_floor")
    count = 1000 if quick else VALIDATE_N
    validate = Figure(
        key="validate_large",
        label=f"exthandler validate ({count:,}-extension goal)",
        n=count,
        unit="s",
        ratio_target=VALIDATE_RATIO,
        floor=floor,
        quick=quick,
    )

    def run_validate() -> None:
        goal = bench.goal(count)
        for _ in range(bench.settings.repeat):
            run = bench.run(["validate", str(goal)])
            run.check_ok("validate")
            validate.add(run)
            validate.add_pair_floor(python_pass(bench))  # right after: this run's floor

    figures = [floor, attempt(validate, run_validate)]
    sizes = QUICK_GROWTH_NS if quick else GROWTH_NS
    parts = {
        (part, n): Figure(key=f"scale_{part}_{n}", label=f"{part}, N = {n:,}", n=n, unit="s")
        for part in PARTS
        for n in sizes
    }

    def run_growth() -> None:
        for n in sizes:
            for attempt_no in range(min(bench.settings.repeat, 3)):
                state = bench.fresh(f"scale-{n}-{attempt_no}") / "state"
                run = bench.run_argv([bench.settings.python, str(WORKER), str(n), str(state)])
                run.check_ok(f"scale worker, N = {n}")
                result = json.loads(run.stdout)
                if result.get("count") != n:
                    raise BenchError(f"scale worker, N = {n}: {result}")
                for part in PARTS:
                    parts[(part, n)].samples.append(result[part])

    probe = next(iter(parts.values()))
    attempt(probe, run_growth)
    for part in PARTS:
        row = [parts[(part, n)] for n in sizes]
        for fig in row:
            fig.error = probe.error
        first, last = row[0], row[-1]
        if first.median and last.median:
            factor = (last.median / last.n) / (first.median / first.n)
            last.extra["per_extension_growth"] = factor
            per = ", ".join(
                f"{fig.n:,}: {fig.median / fig.n * 1e6:.0f} us"
                for fig in row
                if fig.median is not None
            )
            last.note = f"per extension {per}: {factor:.2f}x from N={first.n} to N={last.n}"
            if factor > LINEAR_SLACK:
                last.note += " (grows faster than N)"
        figures += row
    return figures


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
