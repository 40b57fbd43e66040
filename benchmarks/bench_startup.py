"""Start-up: the interpreter alone, then the commands that are mostly start-up.

`exthandler --version`, `exthandler status` (a small state dir), `exthandler validate`
(a 1-extension goal), and the no-op `enable` of a packaged SDK handler (a sequence number
already applied: the run-once path every enable after the first takes). Their targets
are multiples of `python -c pass` measured in the same run, so that they mean the same
on a fast and on a slow machine. These are the fixed cost every `apply` pays before it
touches a single extension, and every protocol command of an SDK handler pays.

    python benchmarks/bench_startup.py [--quick] [--repeat N]
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Bench,
    BenchError,
    Figure,
    attempt,
    bytecode_env,
    check_view,
    main_for,
    python_pass,
)

TITLE = "exthandler start-up"

# Targets, as multiples of the `python -c pass` floor of the same run.
VERSION_RATIO = 3.0
STATUS_RATIO = 5.0
VALIDATE_RATIO = 5.0
SDK_NOOP_RATIO = 5.0

# The packaged SDK handler: attrs settings, an enable that logs each real run, and a
# plugin hook, as examples/hello_sdk has.
SDK_MODULE = "bench_sdk_handler"
SDK_SPEC = f"{SDK_MODULE}:Noop"
SDK_HANDLER = "Bench.SdkNoop"
SDK_VERSION = "1.0.0"
_SDK_SOURCE = '''\
"""A benchmark handler: enable appends one line to $BENCH_LOG and succeeds."""

from __future__ import annotations

import os
from typing import Any

import attrs
from exthandler_sdk import Context, Handler, hookimpl


@attrs.frozen
class Settings:
    greeting: str = "hello"


class Noop(Handler[Settings, None]):
    name = "Bench.SdkNoop"
    version = "1.0.0"

    async def enable(self, ctx: Context[Settings, None]) -> None:
        with open(os.environ["BENCH_LOG"], "a") as log:
            log.write(f"enable {ctx.sequence_number} {ctx.settings.greeting}\\n")


@hookimpl
def exthandler_register_handlers() -> list[type[Handler[Any, Any]]]:
    return [Noop]
'''


def _sdk_handler_dir(bench: Bench) -> tuple[Path, dict[str, str]]:
    """A packaged SDK handler installed as an agent installs it, its sequence 0 enabled
    once for real; its dir and the environment its commands get."""
    base = bench.fresh("sdk")
    source = base / "src"
    source.mkdir()
    (source / f"{SDK_MODULE}.py").write_text(_SDK_SOURCE)
    out = base / "packages"
    python = bench.settings.python
    built = subprocess.run(
        [python, "-m", "exthandler_sdk", "package", SDK_SPEC, "--out", str(out)],
        env=dict(bench.env, PYTHONPATH=str(source)),
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise BenchError(f"packaging the SDK handler: {built.stderr.strip()[-2000:]}")
    handler_dir = base / f"{SDK_HANDLER}-{SDK_VERSION}"
    with zipfile.ZipFile(out / f"{SDK_HANDLER}__{SDK_VERSION}.zip") as archive:
        archive.extractall(handler_dir)
    for name in ("bin/enable", "bin/install", "bin/disable", "bin/update", "bin/uninstall"):
        (handler_dir / name).chmod(0o755)
    folders = {name: base / name for name in ("log", "config", "status", "events")}
    for folder in folders.values():
        folder.mkdir()
    environment = {
        "logFolder": str(folders["log"]),
        "configFolder": str(folders["config"]),
        "statusFolder": str(folders["status"]),
        "heartbeatFile": str(base / "heartbeat.log"),
        "eventsFolder": str(folders["events"]),
    }
    (handler_dir / "HandlerEnvironment.json").write_text(
        json.dumps([{"name": SDK_HANDLER, "version": 1.0, "handlerEnvironment": environment}])
    )
    settings = {"runtimeSettings": [{"handlerSettings": {"publicSettings": {"greeting": "hi"}}}]}
    (folders["config"] / "0.settings").write_text(json.dumps(settings))
    env = dict(
        bench.env,
        # The shim puts the first python3 on PATH to work: the benchmark's interpreter.
        PATH=f"{Path(python).parent}:{bench.env.get('PATH', '/usr/bin:/bin')}",
        BENCH_LOG=str(base / "commands.log"),
        ConfigSequenceNumber="0",
        AZURE_GUEST_AGENT_EXTENSION_PATH=str(handler_dir),
        AZURE_GUEST_AGENT_EXTENSION_VERSION=SDK_VERSION,
    )
    first = bench.run_argv(["/bin/sh", str(handler_dir / "bin" / "enable")], env=env)
    first.check_ok("first enable of the SDK handler")
    _check_sdk_state(handler_dir, base / "commands.log", "first enable")
    return handler_dir, env


def _check_sdk_state(handler_dir: Path, log: Path, what: str) -> None:
    """Sequence 0 enabled exactly once, its status a success."""
    runs = log.read_text().splitlines() if log.exists() else []
    if runs != ["enable 0 hi"]:
        raise BenchError(f"{what}: the handler's enable ran {runs}, expected once")
    status = json.loads((handler_dir.parent / "status" / "0.status").read_bytes())
    level = status[0]["status"]["status"]
    if level != "success":
        raise BenchError(f"{what}: status {level!r}, expected 'success'")


def measure(bench: Bench) -> list[Figure]:
    repeat = max(bench.settings.repeat * 2, 5)
    quick = bench.settings.quick
    goal = bench.goal(1)
    python = bench.settings.python

    bench.warm_up()

    bare = Figure(key="startup_python", label="python -c pass (interpreter floor)", n=1, unit="s")

    def run_bare() -> None:
        for _ in range(repeat):
            run = bench.run_argv([python, "-c", "pass"])
            run.check_ok("python -c pass")
            bare.add(run)

    models = Figure(
        key="startup_import_attrs",
        label="python -c 'import attrs' (a handler's settings library alone)",
        n=1,
        unit="s",
        floor=bare,
        note="what the commands above no longer import: status and validate use the"
        " project's own value classes, and a package's no-op enable does not import the"
        " handler module (whose settings classes are attrs classes)",
    )

    def run_models() -> None:
        for _ in range(repeat):
            run = bench.run_argv([python, "-c", "import attrs"])
            run.check_ok("import attrs")
            models.add(run)
            models.add_pair_floor(python_pass(bench))

    def ratio_figure(key: str, label: str, ratio: float) -> Figure:
        return Figure(
            key=key, label=label, n=1, unit="s", ratio_target=ratio, floor=bare, quick=quick
        )

    version = ratio_figure("startup_version", "exthandler --version", VERSION_RATIO)

    def run_version() -> None:
        for _ in range(repeat):
            run = bench.run(["--version"])
            run.check_ok("--version")
            if b"exthandler" not in run.stdout:
                raise BenchError(f"--version printed {run.stdout!r}")
            version.add(run)
            version.add_pair_floor(python_pass(bench))

    status = ratio_figure("startup_status", "exthandler status (1 extension applied)", STATUS_RATIO)

    def run_status() -> None:
        work = bench.fresh("status")
        state = work / "state"
        applied = bench.apply(goal, state, bench.repo(1, ["1.0.0"]), work / "log")
        check_view(applied, 1, "1.0.0", "status set-up apply")
        for _ in range(repeat):
            run = bench.run(["status", "--state-dir", str(state)])
            run.check_ok("status")
            if b"Bench.Ext0" not in run.stdout:
                raise BenchError(f"status printed {run.stdout[:200]!r}")
            status.add(run)
            status.add_pair_floor(python_pass(bench))

    validate = ratio_figure(
        "startup_validate", "exthandler validate (1-extension goal)", VALIDATE_RATIO
    )

    def run_validate() -> None:
        for _ in range(repeat):
            run = bench.run(["validate", str(goal)])
            run.check_ok("validate")
            validate.add(run)
            validate.add_pair_floor(python_pass(bench))

    sdk_noop = ratio_figure(
        "startup_sdk_noop_enable",
        "SDK handler no-op enable (python -m exthandler_sdk run)",
        SDK_NOOP_RATIO,
    )
    sdk_noop.note = (
        "a packaged SDK handler's enable of an already applied sequence number, as its"
        " shim runs it: `python -s -m exthandler_sdk run MODULE:CLASS enable --runs-once-as"
        " NAME`, lib/ first"
    )
    shim = Figure(
        key="startup_sdk_noop_enable_shim",
        label="SDK handler no-op enable (bin/enable shim)",
        n=1,
        unit="s",
        floor=bare,
        note="the whole command the agent runs: sh, the shim's Python version check, the run",
    )

    def run_sdk() -> None:
        handler_dir, env = _sdk_handler_dir(bench)
        log = Path(env["BENCH_LOG"])
        # What the package's bin/enable runs (without its sh and version check).
        direct = [python, "-s", "-m", "exthandler_sdk", "run", SDK_SPEC, "enable"]
        direct += ["--runs-once-as", SDK_HANDLER]
        direct_env = dict(env, PYTHONPATH=str(handler_dir / "lib"))
        for _ in range(repeat):
            run = bench.run_argv(direct, env=direct_env, cwd=handler_dir)
            run.check_ok("SDK no-op enable")
            sdk_noop.add(run)
            sdk_noop.add_pair_floor(python_pass(bench))
            run = bench.run_argv(["/bin/sh", str(handler_dir / "bin" / "enable")], env=env)
            run.check_ok("SDK no-op enable through the shim")
            shim.add(run)
            shim.add_pair_floor(python_pass(bench))
        _check_sdk_state(handler_dir, log, "no-op enables")

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
        attempt(models, run_models),
        attempt(version, run_version),
        attempt(status, run_status),
        attempt(validate, run_validate),
    ]
    sdk = attempt(sdk_noop, run_sdk)
    if sdk.error:
        shim.error = sdk.error
    figures += [sdk, shim]
    if bench.settings.bytecode == "cached":
        figures.append(attempt(cold, run_cold))
    return figures


def main() -> int:
    return main_for(TITLE, __doc__ or TITLE, measure)


if __name__ == "__main__":
    sys.exit(main())
