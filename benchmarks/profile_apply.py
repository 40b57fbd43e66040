"""Profile one `exthandler apply` of a benchmark scenario with cProfile, and print the top.

    python benchmarks/profile_apply.py install -n 100
    python benchmarks/profile_apply.py reapply -n 1000 --sort tottime --top 40
    python benchmarks/profile_apply.py upgrade -n 100 --out /tmp/upgrade.prof

The scenario is prepared exactly as the benchmark prepares it (untimed), then the one
profiled run is `python -m cProfile -o OUT -m exthandler apply ...`. cProfile slows pure
Python code down (roughly 1.5-2x), so read shares, not absolute times. The profile covers
the runtime's main thread only: time spent in worker threads (`anyio.to_thread`) shows up
as waiting in the event loop's selector.
"""

from __future__ import annotations

import argparse
import pstats
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    CliRun,
    add_arguments,
    check_view,
    settings_from,
    workspace,
)


def profile(bench: Bench, scenario: str, count: int, out: Path) -> CliRun:
    bench.warm_up()
    goal = bench.goal(count)
    old_repo = bench.repo(count, ["1.0.0"])
    work = bench.fresh(f"profile-{scenario}")
    state = work / "state"
    repo = old_repo
    if scenario in ("reapply", "upgrade"):
        check_view(bench.apply(goal, state, old_repo, work / "setup.log"), count, "1.0.0", "setup")
    if scenario == "upgrade":
        repo = bench.repo(count, ["1.0.0", "1.0.1"])
    python = bench.settings.python
    argv = [python, "-m", "cProfile", "-o", str(out), "-m", "exthandler", "apply", str(goal)]
    argv += ["--state-dir", str(state), "--repo", str(repo), "--json"]
    argv += ["--concurrency", str(bench.settings.concurrency)]
    run = bench.run_argv(argv, env=dict(bench.env, BENCH_LOG=str(work / "commands.log")))
    check_view(run, count, "1.0.1" if scenario == "upgrade" else "1.0.0", "profiled run")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("scenario", choices=("install", "reapply", "upgrade"))
    parser.add_argument("-n", type=int, default=100, help="number of extensions")
    parser.add_argument("--out", type=Path, default=Path("exthandler-apply.prof"))
    parser.add_argument("--sort", default="cumulative", help="pstats sort key")
    parser.add_argument("--top", type=int, default=30)
    add_arguments(parser)
    args = parser.parse_args()
    settings = settings_from(args)
    with workspace(settings) as bench:
        run = profile(bench, args.scenario, args.n, args.out.resolve())
    print(
        f"{args.scenario} of {args.n}: {run.seconds * 1000:.0f} ms under cProfile;"
        f" profile in {args.out}"
    )
    stats = pstats.Stats(str(args.out))
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
