"""CLI start-up: the interpreter alone, `exthandler --version`, `exthandler validate`.

These are the fixed cost every `apply` pays before it touches a single extension.

    python benchmarks/bench_startup.py [--quick] [--repeat N]
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
    bytecode_env,
    main_for,
)

TITLE = "exthandler start-up"


def measure(bench: Bench) -> list[Figure]:
    repeat = max(bench.settings.repeat * 2, 5)
    goal = bench.goal(1)
    python = bench.settings.python

    bench.warm_up()

    bare = Figure(key="startup_python", label="python -c pass (interpreter floor)", n=1, unit="s")

    def run_bare() -> None:
        for _ in range(repeat):
            run = bench.run_argv([python, "-c", "pass"])
            run.check_ok("python -c pass")
            bare.add(run)

    version = Figure(key="startup_version", label="exthandler --version", n=1, unit="s")

    def run_version() -> None:
        for _ in range(repeat):
            run = bench.run(["--version"])
            run.check_ok("--version")
            if b"exthandler" not in run.stdout:
                raise BenchError(f"--version printed {run.stdout!r}")
            version.add(run)

    validate = Figure(
        key="startup_validate", label="exthandler validate (1-extension goal)", n=1, unit="s"
    )

    def run_validate() -> None:
        for _ in range(repeat):
            run = bench.run(["validate", str(goal)])
            run.check_ok("validate")
            validate.add(run)

    cold = Figure(
        key="startup_version_no_bytecode",
        label="exthandler --version, PYTHONDONTWRITEBYTECODE=1",
        n=1,
        unit="s",
        note="no .pyc anywhere: every module compiled from source on every run",
    )
    cold_env = bytecode_env(bench.env, None)

    def run_cold() -> None:
        for _ in range(repeat):
            run = bench.run(["--version"], env=cold_env)
            run.check_ok("--version")
            cold.add(run)

    figures = [
        attempt(bare, run_bare),
        attempt(version, run_version),
        attempt(validate, run_validate),
    ]
    if bench.settings.bytecode == "cached":
        figures.append(attempt(cold, run_cold))
    return figures


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
