"""The testing kit: how long a typical `exthandler_harness` test takes (target <= 50 ms).

Two figures: one `Harness.run` of an enable with public and protected settings (in a fresh
harness, as each test gets), timed in this process; and whole pytest tests using the
`exthandler_harness` fixture (setup + call + teardown, as pytest's junit report times
them), run in a pytest subprocess. The certificate is made once per session, as in tests.

    python benchmarks/bench_harness.py [--quick] [--repeat N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Bench, BenchError, Figure, attempt, main_for

TITLE = "exthandler testing kit"
TARGET = 0.050

HANDLER = """
import attrs
from exthandler_sdk import Context, Handler, HandlerError


@attrs.frozen
class Settings:
    message: str


@attrs.frozen
class Secrets:
    token: str


class Typical(Handler[Settings, Secrets]):
    name = "Bench.Testing.Typical"
    version = "1.0.0"

    async def enable(self, ctx: Context[Settings, Secrets]) -> None:
        if ctx.protected.token != "s3cret":
            raise HandlerError(53, "wrong token")
        await ctx.status.transitioning("working")
        ctx.status.substatus("Message", "success", ctx.settings.message)
        await ctx.status.success("done")
"""

TEST = """
import pytest
from bench_handler import Typical


@pytest.mark.parametrize("index", range({count}))
def test_enable(exthandler_harness, index):
    result = exthandler_harness.run(
        Typical, settings={{"message": "hi"}}, protected_settings={{"token": "s3cret"}}
    )
    result.assert_success("done")
"""


def _harness_runs(work: Path, count: int, figure: Figure) -> None:
    sys.path.insert(0, str(work))
    try:
        from bench_handler import Typical  # type: ignore[import-not-found]

        from exthandler.testing import Harness

        certificates = work / "certificate"
        Harness(root=work / "warm", certificate_dir=certificates).run(
            Typical, settings={"message": "hi"}, protected_settings={"token": "s3cret"}
        ).assert_success()
        for index in range(count):
            harness = Harness(root=work / f"run-{index}", certificate_dir=certificates)
            start = time.perf_counter()
            result = harness.run(
                Typical, settings={"message": "hi"}, protected_settings={"token": "s3cret"}
            )
            figure.samples.append(time.perf_counter() - start)
            try:
                result.assert_success("done")
            except AssertionError as exc:
                raise BenchError(str(exc)) from exc
    finally:
        sys.path.remove(str(work))


def _pytest_tests(bench: Bench, work: Path, count: int, figure: Figure) -> None:
    (work / f"test_bench_{count}.py").write_text(TEST.format(count=count))
    report = work / f"junit-{count}.xml"
    command = [bench.settings.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}", f"--rootdir={work}", f"test_bench_{count}.py"]
    command += ["--basetemp", str(work / f"tmp-{count}")]
    completed = subprocess.run(
        command, cwd=work, capture_output=True, text=True, check=False, env=bench.env
    )
    if completed.returncode != 0:
        raise BenchError(f"pytest failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    cases = ET.parse(report).getroot().iter("testcase")
    times = [float(case.get("time", "nan")) for case in cases]
    if len(times) != count:
        raise BenchError(f"{len(times)} test cases reported, expected {count}")
    # The first test also pays for the session's certificate: reported apart.
    figure.extra["first_test_s"] = times[0]
    figure.samples.extend(times[1:])
    figure.extra["mean_s"] = statistics.fmean(times[1:])


def measure(bench: Bench) -> list[Figure]:
    count = 10 if bench.settings.quick else 50
    work = Path(tempfile.mkdtemp(prefix="harness-", dir=bench.root))
    (work / "bench_handler.py").write_text(HANDLER)
    runs = Figure(
        key="harness_run",
        label="Harness.run: enable with encrypted settings",
        n=count,
        unit="s",
        target=TARGET,
        quick=bench.settings.quick,
        note="one operation in a fresh harness, in this process",
    )
    tests = Figure(
        key="harness_pytest_test",
        label="a pytest test using exthandler_harness",
        n=count - 1,
        unit="s",
        target=TARGET,
        quick=bench.settings.quick,
        note="setup + call + teardown per test (junit times); the first test apart",
    )
    return [
        attempt(runs, lambda: _harness_runs(work, count, runs)),
        attempt(tests, lambda: _pytest_tests(bench, work, count, tests)),
    ]


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
