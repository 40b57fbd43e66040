"""`run SOURCE` with remote sources: conditional polling, jitter and backoff on an injected
clock, the last good goal state kept, the source's health in the instance view, and the
CLI commands that take a URL."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exthandler import RuntimeConfig, open_runtime, read_instance_view
from exthandler._cli.main import main
from exthandler._goalstate._source import Pacing
from exthandler._runtime import Runtime
from tests.fleet.sources_support import (
    Fault,
    FileServer,
    package_bytes,
    version_manifest,
)
from tests.servers import Azurite, MotoS3, unique_name

pytestmark = pytest.mark.anyio

HANDLER = "Example.Fleet.Runner"
INTERVAL = 7.0


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "ops.log"
    monkeypatch.setenv("EXTHANDLER_TEST_OPS", str(log))
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    monkeypatch.setenv("EXTHANDLER_BOOT_ID_FILE", str(boot))
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    return log


def config(tmp_path: Path, *repositories: Any) -> RuntimeConfig:
    return RuntimeConfig(
        state_dir=tmp_path / "state",
        repositories=list(repositories),
        load_entry_points=False,
        boot_id_path=tmp_path / "boot_id",
    )


def document(id: str, version: str = "1.0", **properties: Any) -> bytes:
    extension = {
        "name": "runner",
        "publisher": "Example.Fleet",
        "type": "Runner",
        "typeHandlerVersion": version,
        "settings": {"id": id},
        **properties,
    }
    return json.dumps({"id": id, "extensions": [extension]}).encode()


def ops_seen(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line[3:] for line in log.read_text().splitlines() if line.startswith("op=")]


class Stop(Exception):
    """Ends a scripted run."""


class Script:
    """The run loop's clock: each sleep records its delay, then runs the next step (which
    may change the world or look at the runtime); when no step is left, the run stops."""

    def __init__(self, runtime: Runtime, steps: list[Callable[[Runtime], None]]) -> None:
        self.runtime = runtime
        self.steps = list(steps)
        self.delays: list[float] = []
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.moment += timedelta(minutes=1)
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if not self.steps:
            raise Stop
        self.steps.pop(0)(self.runtime)

    def pacing(self, random: float = 0.5) -> Pacing:
        return Pacing(sleep=self.sleep, now=self.now, random=lambda: random, max_backoff=60.0)


async def run_script(
    runtime: Runtime, source: str, steps: list[Callable[[Runtime], None]], **pacing: Any
) -> tuple[Script, list[str]]:
    script = Script(runtime, steps)
    lines: list[str] = []
    with pytest.raises(Stop):
        await runtime.run(
            source, interval=INTERVAL, notify=lines.append, pacing=script.pacing(**pacing)
        )
    return script, lines


def serve_repo(tmp_path: Path, http: FileServer) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    for version in ("1.0.0", "1.1.0"):
        path = repo / f"{HANDLER}__{version}.zip"
        path.write_bytes(package_bytes(tmp_path, HANDLER, version))
    return repo


def nothing(runtime: Runtime) -> None:
    pass


# -- plain HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_unchanged_source_costs_one_conditional_request_per_interval(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.files["/vm1.json"] = document("g1")

    def change(runtime: Runtime) -> None:
        http.files["/vm1.json"] = document("g2")

    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        script, lines = await run_script(
            runtime, http.url("/vm1.json"), [nothing, nothing, change, nothing]
        )
        assert runtime.instance_view().goal_state_id == "g2"
    statuses = [r.status for r in http.requests if r.path == "/vm1.json"]
    assert statuses == [200, 304, 304, 200, 304]
    assert all(r.headers.get("If-None-Match") for r in http.requests[1:])
    assert script.delays == [INTERVAL] * 5  # the jitter factor at its middle
    assert [line.split(":")[0] for line in lines] == ["applied g1", "applied g2"]
    assert ops_seen(ops) == ["install", "enable", "enable"]


async def test_jitter_spreads_the_interval(tmp_path: Path, http: FileServer, ops: Path) -> None:
    http.files["/vm1.json"] = document("g1")
    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        low, _ = await run_script(runtime, http.url("/vm1.json"), [], random=0.0)
        high, _ = await run_script(runtime, http.url("/vm1.json"), [], random=1.0)
    assert low.delays == [pytest.approx(INTERVAL * 0.9)]
    assert high.delays == [pytest.approx(INTERVAL * 1.1)]


async def test_unreachable_source_backs_off_keeps_the_goal_and_reports_itself(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.files["/vm1.json"] = document("g1")
    url = http.url("/vm1.json") + "?token=VMSECRET&v=1"
    seen: list[dict[str, Any] | None] = []

    def down(runtime: Runtime) -> None:
        http.down = True

    def look(runtime: Runtime) -> None:
        source = runtime.instance_view().source
        seen.append(None if source is None else source.to_json())

    def up(runtime: Runtime) -> None:
        look(runtime)
        http.down = False

    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        script, lines = await run_script(
            runtime, url, [down, look, nothing, nothing, nothing, nothing, up, look]
        )
        view = runtime.instance_view()
    # Healthy, then 1..6 failures: 2x, 4x, 8x the interval (capped at 60 s), times 0.75.
    assert script.delays[0] == INTERVAL
    assert script.delays[1:7] == [
        pytest.approx(d * 0.75) for d in (14.0, 28.0, 56.0, 60.0, 60.0, 60.0)
    ]
    assert script.delays[7] == INTERVAL
    first = seen[0]
    assert first is not None
    assert first["status"] == "Unreachable"
    assert first["failures"] == 1
    assert first["since"] is not None
    assert "VMSECRET" not in json.dumps(first)
    assert first["location"].endswith("token=***&v=1")
    during = seen[1]
    assert during is not None
    assert during["failures"] == 6
    assert during["since"] == first["since"]  # since the first failure
    after = seen[2]
    assert after is not None
    assert after["status"] == "Ready"
    assert after["failures"] == 0
    assert after["since"] is None
    # The last good goal state stayed applied, and ran nothing more.
    assert view.goal_state_id == "g1"
    assert ops_seen(ops) == ["install", "enable"]
    # One line when the source went away, one when it came back: not one per retry.
    assert [line.split(":")[0] for line in lines] == [
        "applied g1",
        "goal-state source unreachable",
        "goal-state source reachable again",
    ]
    written = read_instance_view(tmp_path / "state")
    assert written is not None
    assert written.source is not None
    assert written.source.status == "Ready"
    assert "VMSECRET" not in (tmp_path / "state" / "exthandler.log").read_text()


async def test_server_errors_and_invalid_goal_states_keep_the_last_good_one(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.files["/vm1.json"] = document("g1")
    states: list[str] = []

    def broken(runtime: Runtime) -> None:
        http.files["/vm1.json"] = b'{"extensions": [{"name": 1}]}'

    def failing(runtime: Runtime) -> None:
        look(runtime)
        http.faults["/vm1.json"] = Fault(status=500, times=1)

    def look(runtime: Runtime) -> None:
        source = runtime.instance_view().source
        assert source is not None
        states.append(source.status)

    def fixed(runtime: Runtime) -> None:
        look(runtime)
        http.files["/vm1.json"] = document("g2")

    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        _, lines = await run_script(
            runtime, http.url("/vm1.json"), [broken, failing, look, fixed, look]
        )
        assert runtime.instance_view().goal_state_id == "g2"
    assert states == ["Invalid", "Unreachable", "Invalid", "Ready"]
    assert any("$.extensions[0].name" in line for line in lines)
    assert ops_seen(ops) == ["install", "enable", "enable"]


async def test_a_failed_download_is_retried_by_the_loop(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    data = package_bytes(tmp_path, HANDLER, "1.0.0")
    http.files["/pkg.zip"] = data
    http.files["/manifest.xml"] = version_manifest(("1.0.0", [http.url("/pkg.zip")]))
    http.faults["/pkg.zip"] = Fault(status=503)
    http.files["/vm1.json"] = document("g1", location=http.url("/manifest.xml"))

    def store_back(runtime: Runtime) -> None:
        del http.faults["/pkg.zip"]

    async with open_runtime(config(tmp_path)) as runtime:
        await run_script(runtime, http.url("/vm1.json"), [store_back, nothing])
        ext = runtime.instance_view().extension("runner")
    assert ext is not None
    assert ext.statuses[0].code == "ProvisioningState/succeeded"
    assert http.count("/pkg.zip") == 2
    assert [r.status for r in http.requests if r.path == "/vm1.json"] == [200, 304, 304]
    assert ops_seen(ops) == ["install", "enable"]


# -- object stores -----------------------------------------------------------------------------


async def test_run_from_azurite_with_a_sas_url(
    tmp_path: Path, azurite: Azurite, http: FileServer, ops: Path
) -> None:
    container = unique_name("goals")
    azurite.create_container(container)
    azurite.put_blob(container, "vms/vm1.json", document("g1"))

    def change(runtime: Runtime) -> None:
        azurite.put_blob(container, "vms/vm1.json", document("g2", "1.1"))

    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        _, lines = await run_script(
            runtime, azurite.url(container, "vms/vm1.json"), [nothing, change, nothing]
        )
        ext = runtime.instance_view().extension("runner")
    assert [line.split(":")[0] for line in lines] == ["applied g1", "applied g2"]
    assert ext is not None
    assert ext.type_handler_version == "1.1.0"


async def test_run_from_s3(
    tmp_path: Path, moto_s3: MotoS3, http: FileServer, ops: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in moto_s3.environment().items():
        monkeypatch.setenv(key, value)
    bucket = unique_name("goals")
    client = moto_s3.client()  # type: ignore[no-untyped-call]
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="vm1.json", Body=document("g1"))

    def change(runtime: Runtime) -> None:
        client.put_object(Bucket=bucket, Key="vm1.json", Body=document("g2"))

    async with open_runtime(config(tmp_path, serve_repo(tmp_path, http))) as runtime:
        _, lines = await run_script(runtime, f"s3://{bucket}/vm1.json", [nothing, change])
    assert [line.split(":")[0] for line in lines] == ["applied g1", "applied g2"]
    assert ops_seen(ops) == ["install", "enable", "enable"]


# -- the CLI -----------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_apply_validate_and_image_list_take_urls(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    repo = serve_repo(tmp_path, http)
    for path in repo.iterdir():
        http.files[f"/repo/{path.name}"] = path.read_bytes()
    http.files["/repo/index.json"] = json.dumps(sorted(p.name for p in repo.iterdir())).encode()
    http.files["/vm1.json"] = document("g1")
    goal_url = http.url("/vm1.json") + "?token=CLISECRET&a=b"
    code, out, err = cli("validate", goal_url)
    assert code == 0, err
    assert "CLISECRET" not in out
    assert "valid native goal state g1" in out
    code, out, _ = cli("extension", "image", "list", "--repo", http.url("/repo"), "--json")
    assert code == 0
    assert [r["version"] for r in json.loads(out)] == ["1.0.0", "1.1.0"]
    state = str(tmp_path / "state")
    code, out, err = cli(
        "apply", goal_url, "--state-dir", state, "--repo", http.url("/repo"), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["goalStateId"] == "g1"
    code, _, err = cli("validate", http.url("/none.json") + "?token=CLISECRET")
    assert code == 2
    assert "HTTP 404" in err
    assert "CLISECRET" not in err


def test_repo_environment_variable_keeps_urls_whole(
    tmp_path: Path, http: FileServer, ops: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exthandler._cli.main import build_parser, repositories

    args = build_parser().parse_args(["validate", "g.json"])
    monkeypatch.setenv("EXTHANDLER_REPO", f"/srv/a:{http.url('/repo')}:s3://bucket/pkgs")
    assert repositories(args) == [Path("/srv/a"), http.url("/repo"), "s3://bucket/pkgs"]


async def test_a_source_unreachable_from_the_start_is_reported(
    tmp_path: Path, http: FileServer, ops: Path
) -> None:
    http.down = True
    async with open_runtime(config(tmp_path)) as runtime:
        script, lines = await run_script(runtime, http.url("/vm1.json"), [nothing, nothing])
        view = runtime.instance_view()
    assert view.goal_state_id is None
    assert view.source is not None
    assert (view.source.status, view.source.failures) == ("Unreachable", 3)
    assert len(lines) == 1
    assert script.delays == [pytest.approx(d * 0.75) for d in (14.0, 28.0, 56.0)]
    code, out, _ = cli("status", "--state-dir", str(tmp_path / "state"), "--json")
    assert code == 0
    assert json.loads(out)["source"]["status"] == "Unreachable"
    code, out, _ = cli("status", "--state-dir", str(tmp_path / "state"))
    assert code == 0
    assert f"goal-state source {http.url('/vm1.json')}: Unreachable since " in out
