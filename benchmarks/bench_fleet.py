"""A fleet: N embedded runtimes in one process polling one Azurite container.

Azurite (the Azure Storage emulator) holds one goal state shared by the fleet, an
artifact manifest and the package it names. Each runtime has its own state dir and uploads
its aggregate status document to its own blob (`status_url`). Measured, for each N:

- propagation: from writing a new goal state to all N uploaded status documents showing
  it finished (`inSvdSeqNo`, `Success`, the handler `Ready`); the poll interval is its
  natural floor, so the figure is also given in intervals;
- quiet traffic: requests per agent per minute at the server while nothing changes, read
  from Azurite's own debug log (every request, its method, path and status code), and
  the package and manifest downloads in that window (target: one conditional request per
  interval answered 304, no download).

    python benchmarks/bench_fleet.py [--quick] [--tmp DIR] [--interval S] [--quiet S]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
import urllib.error
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    BenchError,
    Figure,
    add_arguments,
    attempt,
    build_zip,
    disk_figure,
    goal_state,
    handler_name,
    package_files,
    print_report,
    settings_from,
    workspace,
)
from tests.servers import Azurite, azurite_executable

TITLE = "exthandler fleet"
SIZES = (50, 200)
QUICK_SIZES = (10, 20)
INTERVAL = 5.0
QUICK_INTERVAL = 1.0
QUIET_INTERVALS = 12  # the quiet window, in poll intervals
# Generous: a fleet that has not converged in this long is broken, not slow.
CONVERGE_TIMEOUT = 600.0
VERSION = "1.0.0"

_REQUEST = re.compile(
    r"^(\S+) (\S+) info: BlobStorageContextMiddleware: RequestMethod=(\S+) RequestURL=(\S+)"
)
_END = re.compile(
    r"^\S+ (\S+) info: EndMiddleware: End response\. TotalTimeInMS=\d+ StatusCode=(\d+)"
)


@dataclass(frozen=True)
class Request:
    """One request Azurite served: when, what, and its answer."""

    at: datetime
    method: str
    path: str
    status: int


def read_requests(log: Path) -> list[Request]:
    """Every request in Azurite's debug log, joined with its response's status code."""
    started: dict[str, tuple[datetime, str, str]] = {}
    statuses: dict[str, int] = {}
    with log.open(errors="replace") as lines:
        for line in lines:
            if "BlobStorageContextMiddleware: RequestMethod=" in line:
                match = _REQUEST.match(line)
                if match:
                    at = datetime.fromisoformat(match[1].replace("Z", "+00:00"))
                    path = urllib.parse.urlsplit(match[4]).path
                    started[match[2]] = (at, match[3], urllib.parse.unquote(path))
            elif "EndMiddleware: End response." in line:
                match = _END.match(line)
                if match:
                    statuses[match[1]] = int(match[2])
    return [
        Request(at, method, path, statuses.get(rid, 0))
        for rid, (at, method, path) in started.items()
    ]


def start_azurite(work: Path) -> Azurite:
    """Azurite as the tests start it, plus `--debug` (a wrapper adds it) to count requests."""
    executable = azurite_executable()
    if executable is None:
        raise BenchError(
            "azurite-blob is not installed: `npm install --prefix .ci/node azurite@3.35.0`"
            " (or set EXTHANDLER_AZURITE)"
        )
    wrapper = work / "azurite-debug"
    wrapper.write_text(f'#!/bin/sh\nexec "{executable}" "$@" --debug "{work}/debug.log"\n')
    wrapper.chmod(0o755)
    return Azurite(str(wrapper), work)


def manifest(uri: str) -> bytes:
    """A PluginVersionManifest offering `VERSION` at `uri`."""
    uri = uri.replace("&", "&amp;")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<PluginVersionManifest><Plugins>'
        f"<Plugin><Version>{VERSION}</Version><Uris><Uri>{uri}</Uri></Uris></Plugin>"
        "</Plugins><InternalPlugins/></PluginVersionManifest>"
    ).encode()


def goal(goal_id: str, location: str, round_no: int) -> bytes:
    """The fleet's goal state: `Bench.Ext0` from the manifest, settings naming the round."""
    document = goal_state(1, goal_id)
    extension = document["extensions"][0]
    extension["location"] = location
    extension["settings"] = {"round": round_no}
    return json.dumps(document).encode()


def applied(document: bytes, goal_id: str) -> bool:
    """Whether an uploaded status document shows `goal_id` finished, its handler Ready."""
    try:
        status = json.loads(document.rstrip(b"\0"))["aggregateStatus"]
        finished = status["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
        handlers = status["handlerAggregateStatus"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        finished.get("inSvdSeqNo") == goal_id
        and finished.get("status") == "Success"
        and len(handlers) == 1
        and handlers[0].get("status") == "Ready"
    )


class Fleet:
    """N runtimes polling one goal-state blob, and what the benchmark sees of them."""

    def __init__(self, bench: Bench, azurite: Azurite, count: int, interval: float) -> None:
        self.bench = bench
        self.azurite = azurite
        self.count = count
        self.interval = interval
        self.container = f"fleet{count}-{os.getpid()}"
        self.work = bench.fresh(f"fleet-{count}")
        azurite.create_container(self.container)
        blob = f"pkgs/{handler_name(0)}__{VERSION}.zip"
        azurite.put_blob(self.container, blob, build_zip(package_files(0)))
        azurite.put_blob(
            self.container, "manifest.xml", manifest(azurite.url(self.container, blob))
        )
        self.location = azurite.url(self.container, "manifest.xml")
        self.source = azurite.url(self.container, "goals/fleet.json")

    def write_goal(self, goal_id: str, round_no: int) -> None:
        self.azurite.put_blob(
            self.container, "goals/fleet.json", goal(goal_id, self.location, round_no)
        )

    def status_blob(self, index: int) -> str:
        return f"status/vm{index}.json"

    async def run(self, body: Callable[[], Any]) -> Any:
        """Run the N runtimes as tasks of one task group while `body` (async) runs."""
        import anyio

        from exthandler import RuntimeConfig, open_runtime

        result: list[Any] = []

        async def agent(index: int, ready: anyio.Event) -> None:
            config = RuntimeConfig(
                state_dir=self.work / f"vm{index}",
                load_entry_points=False,
                status_url=self.azurite.url(self.container, self.status_blob(index)),
                status_interval=0.0,
            )
            async with open_runtime(config) as runtime:
                ready.set()
                await runtime.run(self.source, interval=self.interval)

        async with anyio.create_task_group() as group:
            for index in range(self.count):
                ready = anyio.Event()
                group.start_soon(agent, index, ready)
                await ready.wait()
            result.append(await body())
            group.cancel_scope.cancel()
        return result[0]

    async def wait_applied(self, goal_id: str, since: float) -> list[float]:
        """Poll the N status blobs until each shows `goal_id`; seconds from `since`, each."""
        import anyio

        done: dict[int, float] = {}
        deadline = time.perf_counter() + CONVERGE_TIMEOUT
        limiter = anyio.CapacityLimiter(8)

        def read(index: int) -> bytes:
            try:
                return self.azurite.get_blob(self.container, self.status_blob(index))[0]
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return b""
                raise

        async def look(index: int) -> None:
            data = await anyio.to_thread.run_sync(read, index, limiter=limiter)
            if applied(data, goal_id):
                done.setdefault(index, time.perf_counter() - since)

        while len(done) < self.count:
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"{goal_id}: {len(done)} of {self.count} status documents show it"
                    f" after {CONVERGE_TIMEOUT:.0f} s"
                )
            async with anyio.create_task_group() as group:
                for index in range(self.count):
                    if index not in done:
                        group.start_soon(look, index)
            await anyio.sleep(0.1)
        return [done[i] for i in range(self.count)]


def fleet_figures(
    bench: Bench, azurite: Azurite, log: Path, count: int, interval: float, quiet: float
) -> list[Figure]:
    """Converge N runtimes, propagate one change, then watch a quiet window."""
    import anyio

    quick = bench.settings.quick
    converge = Figure(
        key="fleet_first_goal",
        label="first goal state: last runtime started -> applied in all N",
        n=count,
        unit="s",
        quick=quick,
    )
    propagate = Figure(
        key="fleet_propagation",
        label="new goal state written -> applied in all N uploaded statuses",
        n=count,
        unit="s",
        quick=quick,
    )
    rate = Figure(
        key="fleet_quiet_requests",
        label="quiet: requests per agent per minute (all kinds)",
        n=count,
        unit="req/min",
        target=60.0 / interval * 1.1,
        quick=quick,
    )
    downloads = Figure(
        key="fleet_quiet_downloads",
        label="quiet: package downloads (whole fleet)",
        n=count,
        unit="",
        target=0.0,
        quick=quick,
    )
    figures = [converge, propagate, rate, downloads]

    def measure() -> None:
        fleet = Fleet(bench, azurite, count, interval)
        fleet.write_goal("fleet-1", 1)

        async def body() -> None:
            start = time.perf_counter()
            times = await fleet.wait_applied("fleet-1", start)
            converge.samples.append(max(times))
            converge.extra["median_agent_s"] = statistics.median(times)
            # Let the last uploads and refreshes of the first goal state settle.
            await anyio.sleep(2 * interval)
            start = time.perf_counter()
            fleet.write_goal("fleet-2", 2)
            times = await fleet.wait_applied("fleet-2", start)
            propagate.samples.append(max(times))
            propagate.extra["median_agent_s"] = statistics.median(times)
            propagate.extra["intervals_all"] = max(times) / interval
            propagate.extra["intervals_median"] = statistics.median(times) / interval
            propagate.note = (
                f"interval {interval:g} s: all N in {max(times) / interval:.1f} intervals,"
                f" the median agent in {statistics.median(times) / interval:.1f}"
            )
            await anyio.sleep(2 * interval)
            quiet_start = datetime.now(UTC)
            await anyio.sleep(quiet)
            quiet_end = datetime.now(UTC)
            # Azurite writes its log asynchronously: give it a moment before reading.
            await anyio.sleep(1.0)
            window = [
                r
                for r in read_requests(log)
                if quiet_start <= r.at < quiet_end and f"/{fleet.container}/" in r.path
            ]
            minutes = (quiet_end - quiet_start).total_seconds() / 60.0
            # One download per agent of the first goal state, and none after: the cache.
            converge.extra["package_downloads"] = float(
                sum(
                    1
                    for r in read_requests(log)
                    if r.method == "GET"
                    and f"/{fleet.container}/pkgs/" in r.path
                    and r.path.endswith(".zip")
                )
            )
            kinds: Counter[str] = Counter()
            codes: Counter[int] = Counter()
            for r in window:
                if "/goals/" in r.path and r.method in ("GET", "HEAD"):
                    kinds["goal"] += 1
                    codes[r.status] += 1
                elif "/pkgs/" in r.path and r.path.endswith(".zip") and r.method == "GET":
                    kinds["package"] += 1
                elif "/pkgs/" in r.path:
                    kinds["sidecar"] += 1
                elif r.path.endswith("/manifest.xml"):
                    kinds["manifest"] += 1
                elif "/status/" in r.path and r.method == "PUT":
                    kinds["status"] += 1
                else:
                    kinds["other"] += 1
            per_agent = count * minutes
            rate.samples.append(len(window) / per_agent)
            rate.extra.update(
                goal_polls_per_agent_min=kinds["goal"] / per_agent,
                polls_304_share=codes[304] / max(1, kinds["goal"]),
                status_uploads_per_agent_min=kinds["status"] / per_agent,
                manifest_reads=float(kinds["manifest"]),
                sidecar_reads=float(kinds["sidecar"]),
                other_requests=float(kinds["other"]),
                quiet_seconds=minutes * 60.0,
            )
            rate.note = (
                f"{minutes * 60:.0f} s window, interval {interval:g} s: goal-state polls"
                f" {kinds['goal'] / per_agent:.2f}/agent/min ({codes[304]} of"
                f" {kinds['goal']} answered 304), status uploads"
                f" {kinds['status'] / per_agent:.2f}/agent/min (heartbeat), manifest reads"
                f" {kinds['manifest']}, sidecar reads {kinds['sidecar']}, other {kinds['other']}"
            )
            downloads.samples.append(float(kinds["package"]))
            converge.note = (
                f"package downloads over the whole run: {converge.extra['package_downloads']:.0f}"
                f" (one per agent expected: {count})"
            )

        anyio.run(fleet.run, body)

    attempt(converge, measure)
    if converge.error:
        for figure in figures[1:]:
            figure.error = figure.error or converge.error
    return figures


def measure_fleet(
    bench: Bench, *, interval: float | None = None, quiet: float | None = None
) -> list[Figure]:
    """The figures for each fleet size (N = 50 and 200; quick: 10 and 20)."""
    quick = bench.settings.quick
    interval = interval or (QUICK_INTERVAL if quick else INTERVAL)
    quiet = quiet or QUIET_INTERVALS * interval
    sizes = QUICK_SIZES if quick else SIZES
    # The runtimes' own log lines would drown the report.
    logging.getLogger("exthandler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = bench.fresh("azurite")
    try:
        azurite = start_azurite(work)
    except (BenchError, RuntimeError, OSError) as exc:
        figure = Figure(key="fleet", label="fleet (Azurite)", n=0, unit="s", error=str(exc))
        print(f"fleet: BROKEN: {exc}", file=sys.stderr)
        return [figure]
    try:
        figures: list[Figure] = []
        for count in sizes:
            print(f"  fleet of {count} ...", file=sys.stderr, flush=True)
            figures.extend(
                fleet_figures(bench, azurite, work / "debug.log", count, interval, quiet)
            )
        return figures
    finally:
        azurite.stop()


def measure(bench: Bench) -> list[Figure]:
    """`run_all.py`'s entry point: the default interval and quiet window."""
    return measure_fleet(bench)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or TITLE).splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--interval", type=float, help="poll interval, s (default 5; quick 1)")
    parser.add_argument(
        "--quiet", type=float, help=f"quiet window, s (default {QUIET_INTERVALS} intervals)"
    )
    args = parser.parse_args()
    settings = settings_from(args)
    with workspace(settings) as bench:
        figures = [
            disk_figure(bench, "at start"),
            *measure_fleet(bench, interval=args.interval, quiet=args.quiet),
            disk_figure(bench, "at end"),
        ]
    print_report(figures, settings, TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
