"""Run every benchmark and print one table of figures against their targets.

    python benchmarks/run_all.py            the target sizes (takes a minute or two)
    python benchmarks/run_all.py --quick    small N, fewer runs (a smoke test of the harness)

Always exits 0: these are measurements, not tests. The last line of stdout is a JSON
summary (`figures`, each with `best`, `median`, `target`, `passed`; `all_passed`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    bench_fleet,
    bench_harness,
    bench_inprocess,
    bench_install,
    bench_reapply,
    bench_scale,
    bench_startup,
    bench_upgrade,
)
from benchmarks._common import (
    Bench,
    Figure,
    add_arguments,
    disk_figure,
    print_report,
    settings_from,
    workspace,
)

TITLE = "exthandler benchmarks"
# The suites that delete files go last: the upgrade (its runtime removes the old
# versions) and the harness (temporary dirs). On ext4 without a journal deletions slow
# the file creations of the next minutes (see `_common.create_cost`), which would be
# charged to the suites after them.
SUITES: dict[str, Callable[[Bench], list[Figure]]] = {
    "startup": bench_startup.measure,
    "install": bench_install.measure,
    "reapply": bench_reapply.measure,
    "inprocess": bench_inprocess.measure,
    "scale": bench_scale.measure,
    "upgrade": bench_upgrade.measure,
    "harness": bench_harness.measure,
}
# Run only when named with --only: minutes of real time (a storage server, poll intervals).
EXTRA_SUITES: dict[str, Callable[[Bench], list[Figure]]] = {
    "fleet": bench_fleet.measure,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or TITLE).splitlines()[0])
    add_arguments(parser)
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted({*SUITES, *EXTRA_SUITES}),
        help=f"run only these (repeatable); {', '.join(EXTRA_SUITES)} only when named",
    )
    args = parser.parse_args()
    settings = settings_from(args)
    figures: list[Figure] = []
    with workspace(settings) as bench:
        figures.append(disk_figure(bench, "at start"))
        for name, measure in {**SUITES, **EXTRA_SUITES}.items():
            if (args.only or name in EXTRA_SUITES) and name not in (args.only or ()):
                continue
            start = time.perf_counter()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            figures.extend(measure(bench))
            print(f"  {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        figures.append(disk_figure(bench, "at end"))
    print_report(figures, settings, TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
