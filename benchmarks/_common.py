"""Shared machinery: trivial packages, goal states, running the real CLI, and the report.

Every timed figure is the wall time of one `exthandler` process, started directly with the
project's interpreter (never through `uv run`, whose own start-up must not count), measured
with `time.perf_counter` from spawn to reap. `os.wait4` reaps it, so each run also yields
the process's peak RSS. Every run is checked (exit code, the `--json` instance view, and the
commands the packages logged) so that a fast but wrong runtime cannot post a good figure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONCURRENCY",
    "OPERATIONS",
    "BenchError",
    "Bench",
    "CliRun",
    "Figure",
    "Settings",
    "add_arguments",
    "attempt",
    "main_for",
    "print_report",
    "settings_from",
]

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 8
OPERATIONS = ("install", "enable", "disable", "update", "uninstall")
PUBLISHER = "Bench"
EPOCH = (1980, 1, 1, 0, 0, 0)
# Generous: a benchmark run that takes this long is broken, not slow.
RUN_TIMEOUT = 900.0

_MANIFEST = [
    {
        "name": "{type}",
        "version": 1.0,
        "handlerManifest": {
            "installCommand": "bin/install.sh",
            "enableCommand": "bin/enable.sh",
            "disableCommand": "bin/disable.sh",
            "updateCommand": "bin/update.sh",
            "uninstallCommand": "bin/uninstall.sh",
            "rebootAfterInstall": False,
            "reportHeartbeat": False,
            "updateMode": "UpdateWithInstall",
            "continueOnUpdateFailure": False,
            "supportsMultipleExtensions": False,
        },
    }
]

# Each command appends one line to $BENCH_LOG (an O_APPEND write by a shell builtin, so
# concurrent commands never interleave within a line): that is how a run proves which
# commands it really ran. enable also writes a terminal status for its sequence number.
_LOG_LINE = (
    '[ -z "${{BENCH_LOG:-}}" ] ||'
    ' echo "{op} {handler} ${{AZURE_GUEST_AGENT_EXTENSION_VERSION:-?}}" >>"$BENCH_LOG"\n'
)
_STATUS = (
    '[{{"version": 1.0, "timestampUTC": "2026-01-01T00:00:00Z", "status": {{"name": "{handler}",'
    ' "operation": "Enable", "configurationAppliedTime": "2026-01-01T00:00:00Z",'
    ' "status": "success", "code": 0,'
    ' "formattedMessage": {{"lang": "en-US", "message": "enabled"}}}}}}]'
)


class BenchError(Exception):
    """A benchmark run was wrong (not slow): bad exit code, wrong view, wrong commands."""


def handler_name(index: int) -> str:
    return f"{PUBLISHER}.Ext{index}"


def extension_name(index: int) -> str:
    return f"ext{index}"


def script(op: str, handler: str) -> str:
    """The POSIX sh body of one manifest command of a benchmark package."""
    text = "#!/bin/sh\n" + _LOG_LINE.format(op=op, handler=handler)
    if op == "enable":
        status = _STATUS.format(handler=handler)
        text += f"printf '%s\\n' '{status}' >\"status/${{ConfigSequenceNumber:-0}}.status\"\n"
    return text + "exit 0\n"


def package_files(index: int) -> dict[str, str]:
    """Path inside the package -> content, for the trivial handler `Bench.Ext<index>`."""
    handler = handler_name(index)
    manifest = json.loads(json.dumps(_MANIFEST))
    manifest[0]["name"] = f"Ext{index}"
    files = {"HandlerManifest.json": json.dumps(manifest, indent=2) + "\n"}
    for op in OPERATIONS:
        files[f"bin/{op}.sh"] = script(op, handler)
    return files


def build_zip(files: Mapping[str, str]) -> bytes:
    """A deterministic zip, built the way examples/build.py builds the example packages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            data = files[name].encode()
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # Unix, so that the permission bits are honoured
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if data.startswith(b"#!") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def goal_state(count: int, goal_id: str) -> dict[str, Any]:
    """A native goal state enabling `Bench.Ext0..count-1`, version 1.0 (hotfixes forced)."""
    return {
        "id": goal_id,
        "extensions": [
            {
                "name": extension_name(i),
                "publisher": PUBLISHER,
                "type": f"Ext{i}",
                "typeHandlerVersion": "1.0",
                "autoUpgradeMinorVersion": False,
                "state": "enabled",
                "settings": {"index": i},
            }
            for i in range(count)
        ],
    }


@dataclass(frozen=True)
class CliRun:
    """One finished CLI process: wall time, exit code, output and peak RSS."""

    argv: tuple[str, ...]
    seconds: float
    returncode: int
    stdout: bytes
    stderr: bytes
    max_rss_kib: int
    cpu_seconds: float = 0.0
    """User + system CPU of the process and the commands it ran (less load-sensitive)."""

    def check_ok(self, what: str) -> None:
        if self.returncode != 0:
            tail = self.stderr.decode(errors="replace")[-2000:]
            raise BenchError(f"{what}: exit code {self.returncode}\n{tail}")


@dataclass
class Figure:
    """One measured figure: its samples, its target (None: shown for context only)."""

    key: str
    label: str
    n: int
    unit: str
    samples: list[float] = field(default_factory=list)
    target: float | None = None
    note: str = ""
    quick: bool = False
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)
    ratio_target: float | None = None
    """A target as a multiple of `floor` (judged instead of `target` when set)."""
    floor: Figure | None = None
    """The figure a ratio is taken to: the interpreter floor of the same run."""
    pair_floors: list[float] = field(default_factory=list)
    """The floor timed right after each sample (`add_pair_floor`): with one per sample,
    the ratio is the median of the pairs' ratios, so that the machine getting slower or
    faster between the runs and a floor timed apart does not count."""

    def add(self, run: CliRun) -> None:
        """Record one CLI run: its wall time as a sample, its CPU time beside it."""
        self.samples.append(run.seconds)
        self.cpu.append(run.cpu_seconds)
        self.extra["median_cpu_s"] = statistics.median(self.cpu)

    def add_pair_floor(self, seconds: float) -> None:
        """Record the floor timed right after the last sample (see `pair_floors`)."""
        self.pair_floors.append(seconds)

    @property
    def paired(self) -> bool:
        """Whether every sample has the floor timed after it (see `pair_floors`)."""
        floors = self.pair_floors
        return bool(floors) and len(floors) == len(self.samples) and all(floors)

    @property
    def best(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def ratio(self) -> float | None:
        """The median as a multiple of the floor's median (None without a floor); for a
        paired figure, the median of each run's ratio to the floor taken just after it."""
        if self.paired:
            pairs = zip(self.samples, self.pair_floors, strict=True)
            return statistics.median(s / f for s, f in pairs)
        if self.floor is None or self.median is None or not self.floor.median:
            return None
        return self.median / self.floor.median

    @property
    def ratio_of_medians(self) -> float | None:
        """The median over the median of the floor timed apart (of the pairs' floors
        when there is no such floor)."""
        floors = self.floor.samples if self.floor is not None else self.pair_floors
        if self.median is None or not floors or not statistics.median(floors):
            return None
        return self.median / statistics.median(floors)

    @property
    def passed(self) -> bool | None:
        """Judged on the median; None when there is no target (or N is not the target's).

        A ratio target is judged on `ratio`. A run that was wrong (see BenchError) never
        passes, whatever its time.
        """
        if self.error:
            return False
        if self.ratio_target is not None:
            if self.quick or self.ratio is None:
                return None
            return self.ratio <= self.ratio_target
        if self.target is None or self.quick or self.median is None:
            return None
        return self.median <= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "n": self.n,
            "unit": self.unit,
            "target": self.target,
            "best": None if self.best is None else round(self.best, 4),
            "median": None if self.median is None else round(self.median, 4),
            "samples": [round(s, 4) for s in self.samples],
            "passed": self.passed,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "paired": self.paired,
            "ratio_target": self.ratio_target,
            "note": self.note,
            "error": self.error,
            "extra": {k: round(v, 4) for k, v in self.extra.items()},
        }


@dataclass(frozen=True)
class Settings:
    """What every benchmark is parameterised by (from the command line)."""

    quick: bool
    repeat: int
    concurrency: int
    cli: tuple[str, ...]
    python: str
    keep: bool
    tmp: Path | None
    verbose: bool
    bytecode: str = "cached"


def _default_python() -> str:
    """An interpreter that can import exthandler: this one, else the project's venv."""
    if importlib.util.find_spec("exthandler") is not None:
        return sys.executable
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise SystemExit("cannot find an interpreter with exthandler installed; run `uv sync`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller N and fewer repetitions")
    parser.add_argument("--repeat", type=int, default=0, help="timed runs per figure")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument(
        "--cli",
        choices=("module", "script"),
        default="module",
        help="`python -m exthandler` (default) or the venv's `exthandler` console script",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--tmp", type=Path, help="parent of the temporary directory (made if missing)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run")
    parser.add_argument(
        "--bytecode",
        choices=("cached", "off", "inherit"),
        default="cached",
        help="cached (default): the CLI reads and writes .pyc files under the benchmark's"
        " own PYTHONPYCACHEPREFIX (warmed before timing), as an installed runtime would;"
        " off: PYTHONDONTWRITEBYTECODE=1, every run compiles every module from source;"
        " inherit: leave the environment as it is",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    python = _default_python()
    if args.cli == "script":
        script_path = Path(python).with_name("exthandler")
        if not script_path.exists():
            raise SystemExit(f"{script_path}: no console script next to {python}")
        cli: tuple[str, ...] = (str(script_path),)
    else:
        cli = (python, "-m", "exthandler")
    repeat = args.repeat or (3 if args.quick else 5)
    return Settings(
        quick=args.quick,
        repeat=repeat,
        concurrency=args.concurrency,
        cli=cli,
        python=python,
        keep=args.keep,
        tmp=args.tmp,
        verbose=args.verbose,
        bytecode=args.bytecode,
    )


class Bench:
    """A temporary workspace: package repositories, goal files, state dirs, CLI runs."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self._repos: dict[tuple[int, tuple[str, ...]], Path] = {}
        self._counter = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EXTHANDLER_")}
        self.env.pop("BENCH_LOG", None)
        if settings.bytecode != "inherit":
            self.env = bytecode_env(
                self.env, root / "pycache" if settings.bytecode == "cached" else None
            )
        self._warm = False

    # -- files ------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> Path:
        self._counter += 1
        path = self.root / f"{prefix}-{self._counter}"
        path.mkdir()
        return path

    def repo(self, count: int, versions: Sequence[str]) -> Path:
        """A repository offering `Bench.Ext0..count-1` at each of `versions` (cached)."""
        key = (count, tuple(versions))
        if key not in self._repos:
            repo = self.root / f"repo-{count}-{'-'.join(versions)}"
            repo.mkdir()
            zips = [build_zip(package_files(i)) for i in range(count)]
            for version in versions:
                for i, data in enumerate(zips):
                    name = f"{handler_name(i)}__{version}.zip"
                    (repo / name).write_bytes(data)
                    digest = hashlib.sha256(data).hexdigest()
                    (repo / f"{name}.sha256").write_text(f"{digest}  {name}\n")
            self._repos[key] = repo
        return self._repos[key]

    def goal(self, count: int) -> Path:
        path = self.root / f"goal-{count}.json"
        if not path.exists():
            path.write_text(json.dumps(goal_state(count, f"bench-{count}"), indent=1))
        return path

    # -- running the CLI --------------------------------------------------------------------

    def run(self, args: Sequence[str], *, env: Mapping[str, str] | None = None) -> CliRun:
        """Run the CLI with `args`; time it from spawn to reap and take its rusage."""
        return self.run_argv((*self.settings.cli, *args), env=env)

    def run_argv(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> CliRun:
        """Run any command as `run` runs the CLI (same timing, same rusage)."""
        argv = tuple(argv)
        with tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=dict(env if env is not None else self.env),
                cwd=cwd,
            )
            assert process.stdout is not None
            with process.stdout:
                out = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            errors = err.read()
        run = CliRun(
            argv=argv,
            seconds=seconds,
            returncode=process.returncode,
            stdout=out,
            stderr=errors,
            max_rss_kib=usage.ru_maxrss,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )
        if self.settings.verbose:
            print(
                f"  {seconds * 1000:8.1f} ms  rc={run.returncode}"
                f"  cpu={run.cpu_seconds * 1000:6.0f} ms  rss={usage.ru_maxrss / 1024:.1f} MiB"
                f"  {_short(argv)}",
                file=sys.stderr,
            )
        return run

    def warm_up(self) -> None:
        """Untimed runs first: bytecode compiled (if cached), every file in the page cache."""
        if self._warm:
            return
        self._warm = True
        work = self.fresh("warm-up")
        self.run(["--version"]).check_ok("warm-up --version")
        self.run(["validate", str(self.goal(1))]).check_ok("warm-up validate")
        run = self.apply(self.goal(1), work / "state", self.repo(1, ["1.0.0"]), work / "log")
        check_view(run, 1, "1.0.0", "warm-up apply")

    def apply(
        self, goal: Path, state: Path, repo: Path, log: Path, extra: Sequence[str] = ()
    ) -> CliRun:
        env = dict(self.env, BENCH_LOG=str(log))
        args = [
            "apply",
            str(goal),
            "--state-dir",
            str(state),
            "--repo",
            str(repo),
            "--json",
            "--concurrency",
            str(self.settings.concurrency),
            *extra,
        ]
        return self.run(args, env=env)


def bytecode_env(env: Mapping[str, str], cache: Path | None) -> dict[str, str]:
    """`env` with .pyc files cached under `cache`, or with bytecode writing off (None)."""
    child = {
        k: v for k, v in env.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    if cache is None:
        child["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        child["PYTHONPYCACHEPREFIX"] = str(cache)
    return child


def _short(argv: Sequence[str]) -> str:
    """The interesting words of a command line, for --verbose."""
    words = [Path(w).name if "/" in w else w for w in argv]
    return " ".join(words[:6])


# -- checking a run ---------------------------------------------------------------------------


def check_view(run: CliRun, count: int, version: str, what: str) -> None:
    """Exit 0, and every extension Enabled at `version` with a succeeded status."""
    run.check_ok(what)
    try:
        view = json.loads(run.stdout)
    except ValueError as exc:
        raise BenchError(f"{what}: --json output is not JSON: {exc}") from exc
    extensions = {e["name"]: e for e in view.get("extensions", [])}
    if len(extensions) != count:
        raise BenchError(f"{what}: {len(extensions)} extensions in the view, expected {count}")
    for i in range(count):
        ext = extensions.get(extension_name(i))
        if ext is None:
            raise BenchError(f"{what}: {extension_name(i)} missing from the view")
        statuses = ext.get("statuses") or [{}]
        problems = []
        if ext.get("typeHandlerVersion") != version:
            problems.append(f"version {ext.get('typeHandlerVersion')} != {version}")
        if ext.get("handlerState") != "Enabled":
            problems.append(f"handlerState {ext.get('handlerState')}")
        if statuses[0].get("code") != "ProvisioningState/succeeded":
            problems.append(f"status {statuses[0].get('code')}: {statuses[0].get('message')}")
        if problems:
            raise BenchError(f"{what}: {extension_name(i)}: {'; '.join(problems)}")


def check_commands(log: Path, expected: Mapping[tuple[str, str], int], what: str) -> None:
    """The commands the packages logged are exactly `expected` ((op, version) -> count)."""
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            op, _, version = line.split()
            seen[(op, version)] += 1
    if seen != collections.Counter(expected):
        raise BenchError(f"{what}: commands run {dict(seen)}, expected {dict(expected)}")


# -- the process-spawn floor ----------------------------------------------------------------


def spawn_floor(
    bench: Bench, count: int, ops: Sequence[tuple[str, str]], concurrency: int
) -> float:
    """Seconds to run `ops` ((operation, version) in order) for each of `count` handlers.

    Each command runs as the runtime runs it (`/bin/sh -c <dir>/bin/<op>.sh`, in its own
    session, cwd the handler dir, protocol variables set), handlers `concurrency` at a time
    with a thread pool: the cost of the processes alone, with no runtime around them.
    """
    base = bench.fresh("floor")
    log = base / "commands.log"
    jobs: list[tuple[Path, list[tuple[str, dict[str, str]]]]] = []
    for i in range(count):
        directory = base / f"{handler_name(i)}-1.0.0"
        for name, text in package_files(i).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)
        (directory / "status").mkdir()
        steps = []
        for op, version in ops:
            env = dict(
                bench.env,
                BENCH_LOG=str(log),
                ConfigSequenceNumber="0",
                AZURE_GUEST_AGENT_EXTENSION_PATH=str(directory),
                AZURE_GUEST_AGENT_EXTENSION_VERSION=version,
            )
            steps.append((f"{directory}/bin/{op}.sh", env))
        jobs.append((directory, steps))

    def drive(job: tuple[Path, list[tuple[str, dict[str, str]]]]) -> None:
        directory, steps = job
        for command, env in steps:
            subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                check=True,
            )

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(drive, jobs))
        seconds = time.perf_counter() - start
    expected = collections.Counter(ops)
    check_commands(log, {k: v * count for k, v in expected.items()}, "spawn floor")
    # Left for the workspace's removal at the very end: see `create_cost`.
    return seconds


def python_pass(bench: Bench) -> float:
    """Seconds of one `python -c pass` of the CLI's interpreter: the interpreter floor."""
    run = bench.run_argv([bench.settings.python, "-c", "pass"])
    run.check_ok("python -c pass")
    return run.seconds


def interpreter_floor(bench: Bench, key: str) -> Figure:
    """An informational figure: `python -c pass`, taken `repeat` times (at least 5)."""
    floor = Figure(key=key, label="python -c pass (interpreter floor)", n=1, unit="s")

    def run() -> None:
        for _ in range(max(bench.settings.repeat, 5)):
            floor.samples.append(python_pass(bench))

    return attempt(floor, run)


def paired_note(figure: Figure) -> str:
    """How a paired figure's ratio was taken, with the ratio of the medians beside it."""
    of_medians = figure.ratio_of_medians
    if not figure.paired or of_medians is None:
        return ""
    return (
        f"ratio: median of {len(figure.samples)} runs each over the floor taken right after"
        f" it (median over the floor's median: {of_medians:.2f}x)"
    )


def sequential_floor(bench: Bench, count: int, ops: Sequence[tuple[str, str]]) -> float:
    """Seconds of the work itself, done one process after the other: `python -c pass`,
    then `ops` for each of `count` handlers as `spawn_floor` runs them, one at a time.
    Stricter than the concurrent floor: a runtime that overlaps its commands can beat it.
    """
    return python_pass(bench) + spawn_floor(bench, count, ops, 1)


# -- the disk ------------------------------------------------------------------------------

CREATE_PROBE = 1000
HEALTHY_CREATE_US = 25.0  # what a creation costs on this machine's disk at rest


def create_cost(bench: Bench) -> float:
    """Seconds per empty file created in a new directory (the files are kept).

    On ext4 without a journal, the inode allocator steps over every inode freed in the
    last 60 s (300 s while its inode-table block is unwritten), one buffer lookup each,
    before it hands out a new one: after a mass deletion nearby, a file creation that
    costs ~20 us can cost 100-800 us for minutes. Every figure here creates thousands of
    files, so this probe says whether the disk was in that state. The benchmarks delete
    nothing until the end for the same reason.
    """
    base = bench.fresh("create-probe")
    start = time.perf_counter()
    for i in range(CREATE_PROBE):
        os.close(os.open(base / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - start) / CREATE_PROBE


def disk_figure(bench: Bench, when: str) -> Figure:
    """An informational figure: `create_cost` now (microseconds)."""
    figure = Figure(
        key=f"disk_create_cost_{when.replace(' ', '_')}",
        label=f"disk check: one file creation, {when}",
        n=CREATE_PROBE,
        unit="us",
    )

    def run() -> None:
        figure.samples.append(create_cost(bench) * 1e6)

    attempt(figure, run)
    if figure.median is not None and figure.median > 3 * HEALTHY_CREATE_US:
        figure.note = (
            f"{figure.median:.0f} us per file: the disk is slow to create files now (on"
            " ext4 without a journal, after a mass deletion in the last minutes); every"
            " figure that creates files is inflated"
        )
    return figure


# -- reporting ------------------------------------------------------------------------------


def _target(fig: Figure) -> str:
    if fig.ratio_target is not None:
        return f"<= {fig.ratio_target:g}x floor"
    return "<= " + _fmt(fig.target, fig.unit) if fig.target is not None else "-"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "us":
        return f"{value:.0f} us"
    return f"{value:.1f} {unit}"


_LOAD_AT_START = os.getloadavg()[0]


def _load() -> str:
    return f"{_LOAD_AT_START:.2f}/{os.getloadavg()[0]:.2f}"


def print_report(figures: Sequence[Figure], settings: Settings, title: str) -> None:
    """The table for people, then one JSON line (the last line of stdout) for scripts."""
    rows = [("figure", "N", "target", "best", "median", "x floor", "cpu (median)", "result")]
    for fig in figures:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[fig.passed]
        if fig.error:
            verdict = "BROKEN"
        elif fig.quick and (fig.target is not None or fig.ratio_target is not None):
            verdict = "n/a (quick)"
        rows.append(
            (
                fig.label,
                str(fig.n),
                _target(fig),
                _fmt(fig.best, fig.unit),
                _fmt(fig.median, fig.unit),
                f"{fig.ratio:.2f}x" if fig.ratio is not None else "-",
                _fmt(statistics.median(fig.cpu), "s") if fig.cpu else "-",
                verdict,
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    print()
    print(
        f"{title}  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
        f" concurrency {settings.concurrency}, {settings.repeat} runs, median judged,"
        f" bytecode {settings.bytecode}, load average before/after {_load()})"
    )
    for r, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if r == 0:
            print("  ".join("-" * w for w in widths))
    notes = [
        f"  {fig.label}: {'; '.join(n for n in (fig.note, paired_note(fig)) if n)}"
        for fig in figures
        if fig.note or fig.paired
    ]
    notes += [f"  {fig.label}: BROKEN: {fig.error}" for fig in figures if fig.error]
    if notes:
        print("notes:")
        print("\n".join(notes))
    summary = {
        "benchmark": title,
        "quick": settings.quick,
        "concurrency": settings.concurrency,
        "repeat": settings.repeat,
        "cli": list(settings.cli),
        "cpus": os.cpu_count(),
        "bytecode": settings.bytecode,
        "loadavg_1min": [round(_LOAD_AT_START, 2), round(os.getloadavg()[0], 2)],
        "figures": [fig.to_json() for fig in figures],
        "all_passed": all(f.passed is not False for f in figures),
    }
    print(json.dumps(summary, sort_keys=True), flush=True)


@contextlib.contextmanager
def workspace(settings: Settings) -> Iterator[Bench]:
    if settings.tmp is not None:
        settings.tmp.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="exthandler-bench-", dir=settings.tmp))
    try:
        yield Bench(settings, root)
    finally:
        if settings.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def attempt(figure: Figure, measure: Callable[[], None]) -> Figure:
    """Run `measure` (which appends to `figure.samples`); a wrong run marks the figure broken.

    The error is reported, not raised: the other figures are still measured.
    """
    try:
        measure()
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        figure.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        print(f"{figure.label}: BROKEN: {exc}", file=sys.stderr)
    return figure


def floor_figure(
    bench: Bench, *, key: str, label: str, n: int, measure_once: Callable[[], float]
) -> Figure:
    """An informational figure: `measure_once` (seconds) taken `repeat` times."""
    floor = Figure(key=key, label=label, n=n, unit="s")

    def run() -> None:
        for _ in range(bench.settings.repeat):
            floor.samples.append(measure_once())

    return attempt(floor, run)


def main_for(title: str, description: str, measure: Callable[[Bench], list[Figure]]) -> int:
    """The `main()` of a benchmark script: parse options, measure, report; always 0."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    settings = settings_from(parser.parse_args())
    with workspace(settings) as bench:
        figures = [disk_figure(bench, "at start"), *measure(bench), disk_figure(bench, "at end")]
    print_report(figures, settings, title)
    return 0
