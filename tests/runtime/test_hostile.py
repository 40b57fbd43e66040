"""A hostile handler: it plants FIFOs, links and huge files wherever the runtime reads or
writes in its handler dir and log dir, and the runtime must contain it.

Handlers run as the runtime's user, so the runtime must not do their damage for them: it
never blocks on what they leave, never reads more than a cap, never follows their links.
Each case runs a real package whose enable plants something, next to a well-behaved
extension in the same goal state, through the public API in a child process (so that a
hang or a runaway read fails the test instead of the test run, and peak memory can be
measured). Each asserts that the apply returns, the other extension succeeds, the hostile
one gets a precise status, nothing outside is changed, and memory stays bounded.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from exthandler._executors.inprocess import materialize
from tests.runtime.sdk_handlers import Counter
from tests.runtime.support import Packages, extension, goal, view_of

pytestmark = pytest.mark.timeout(60)  # a safety net: a hang fails instead of stalling CI

HOSTILE = "Hostile.Ext"
GOOD = "Good.Ext"
MiB = 1024 * 1024
# Peak memory the runtime may grow by during one apply. Reading any of the 1 GiB files
# planted here would take at least 1024 MiB.
MEMORY_GROWTH_LIMIT = 256 * MiB

# Runs one apply through the public API in a fresh interpreter and prints the view and
# the peak resident size before and after the apply. The address space is capped so that
# a runaway read ends in a MemoryError instead of exhausting the machine.
_DRIVER = r"""
import json, resource, sys
from pathlib import Path

import anyio

from exthandler import RuntimeConfig, load_goal_state, open_runtime

limit = 6 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def main(state, repo, goal_path, boot):
    config = RuntimeConfig(
        state_dir=state,
        repositories=[repo],
        load_entry_points=False,
        boot_id_path=Path(boot),
        kill_grace=1.0,
    )
    async with open_runtime(config) as runtime:
        goal = load_goal_state(goal_path)
        before = peak()
        view = await runtime.apply(goal)
        return view.to_json(), before, peak()


view, before, after = anyio.run(main, *sys.argv[1:5])
print(json.dumps({"view": view, "before": before, "after": after}))
"""

# Shell snippets for the hostile package's commands (see tests/runtime/support.py: `dir`
# is the handler dir, `status_file` the path of the current status file). `$OUTSIDE` is a
# dir outside every handler dir; `$logdir` the handler's log dir.
_PRELUDE = 'logdir="$(dirname "$dir")/log/Hostile.Ext"'


@attrs.frozen
class Outside:
    """A dir no handler operation may change, shared like /tmp, holding one file."""

    path: Path

    @classmethod
    def make(cls, root: Path) -> Outside:
        path = root / "outside"
        path.mkdir()
        path.chmod(0o1777)
        (path / "precious").write_text("precious\n")
        (path / "1.json").write_text('{"not": "an event of the extension"}')
        (path / "0.status").write_text("[]")
        return cls(path)

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": stat.S_IMODE(self.path.stat().st_mode),
            "files": {p.name: p.read_bytes() for p in sorted(self.path.iterdir())},
        }


@attrs.define
class Scene:
    """A state dir, a repository with a hostile and a good package, and an outside dir."""

    root: Path
    packages: Packages
    outside: Outside

    @property
    def state(self) -> Path:
        return self.root / "state"

    def apply(self, document: Mapping[str, Any], *, umask: int = 0o022) -> dict[str, Any]:
        """One apply in a child process: the view and the peak memory before and after."""
        goal_path = self.root / "goal.json"
        goal_path.write_text(json.dumps(document))
        boot = self.root / "boot_id"
        boot.write_text("boot-1\n")
        env = {
            **os.environ,
            "EXTHANDLER_TEST_OPS": str(self.root / "ops.log"),
            "OUTSIDE": str(self.outside.path),
        }
        args = [str(self.state), str(self.packages.repo), str(goal_path), str(boot)]
        try:
            done = subprocess.run(
                [sys.executable, "-c", _DRIVER, *args],
                capture_output=True,
                text=True,
                env=env,
                umask=umask,
                timeout=25,  # a safety net (two applies fit in the 60 s above), not a limit
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the apply never returned: {exc.stderr!r}") from None
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        growth = result["after"] - result["before"]
        assert growth < MEMORY_GROWTH_LIMIT, f"peak memory grew by {growth // MiB} MiB"
        return result

    def runtime_log(self) -> str:
        path = self.state / "exthandler.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def scene(tmp_path: Path, packages: Packages) -> Scene:
    packages.build(GOOD, "1.0.0")
    return Scene(root=tmp_path, packages=packages, outside=Outside.make(tmp_path))


def both(version: str = "1.0", **hostile: Any) -> dict[str, Any]:
    """The goal state: the hostile extension and a well-behaved one of another handler."""
    return goal(extension("hostile", HOSTILE, version, **hostile), extension("good", GOOD))


def _status(view: Mapping[str, Any], name: str) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = view_of(view, name)["statuses"]
    return statuses[0]


def assert_contained(scene: Scene, result: Mapping[str, Any], before: dict[str, Any]) -> None:
    """The good extension succeeded and the outside dir is as it was."""
    assert _status(result["view"], "good")["code"] == "ProvisioningState/succeeded"
    assert scene.outside.snapshot() == before


# -- status/<seq>.status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plant", "reason"),
    [
        ('f=$(status_file); rm -f "$f"; mkfifo "$f"', "a FIFO, not a regular file"),
        ('truncate -s 1G "$(status_file)"', "larger than 4194304 bytes"),
        ('ln -sf /dev/zero "$(status_file)"', "a symbolic link, not followed"),
        ('ln -sf "$OUTSIDE/0.status" "$(status_file)"', "a symbolic link, not followed"),
    ],
    ids=["fifo", "huge", "dev-zero", "link-outside"],
)
def test_a_planted_status_file_is_error_1012(scene: Scene, plant: str, reason: str) -> None:
    scene.packages.build(HOSTILE, "1.0.0", actions={"enable": plant})
    before = scene.outside.snapshot()
    result = scene.apply(both())
    assert_contained(scene, result, before)
    status = _status(result["view"], "hostile")
    assert status["code"] == "ProvisioningState/failed/1012"
    assert reason in status["message"]


# -- heartbeat.log -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plant", "reason"),
    [
        ('mkfifo "$dir/heartbeat.log"', "a FIFO, not a regular file"),
        ('truncate -s 1G "$dir/heartbeat.log"', "larger than 4194304 bytes"),
        ('ln -s /dev/zero "$dir/heartbeat.log"', "a symbolic link, not followed"),
    ],
    ids=["fifo", "huge", "dev-zero"],
)
def test_a_planted_heartbeat_is_unknown(scene: Scene, plant: str, reason: str) -> None:
    scene.packages.build(
        HOSTILE,
        "1.0.0",
        actions={"enable": f"{plant}; write_status success 0 ok"},
        manifest={"reportHeartbeat": True},
    )
    before = scene.outside.snapshot()
    result = scene.apply(both())
    assert_contained(scene, result, before)
    hostile = view_of(result["view"], "hostile")
    assert hostile["statuses"][0]["code"] == "ProvisioningState/succeeded"
    heartbeat = hostile["substatuses"][-1]
    assert heartbeat["code"] == "ComponentStatus/Heartbeat/Unknown"
    assert reason in heartbeat["message"]


# -- HandlerManifest.json (read again by the next runtime) ----------------------------------


@pytest.mark.parametrize(
    ("plant", "code", "reason"),
    [
        ('rm "$dir/HandlerManifest.json"; mkfifo "$dir/HandlerManifest.json"', 1002, "FIFO"),
        ('truncate -s 1G "$dir/HandlerManifest.json"', 1003, "larger than"),
        ('ln -sf /dev/zero "$dir/HandlerManifest.json"', 1002, "link"),
        ('echo "[{broken" > "$dir/HandlerManifest.json"', 1003, "not valid JSON"),
    ],
    ids=["fifo", "huge", "dev-zero", "garbage"],
)
def test_a_planted_manifest_fails_only_its_handler(
    scene: Scene, plant: str, code: int, reason: str
) -> None:
    scene.packages.build(
        HOSTILE, "1.0.0", actions={"enable": f"write_status success 0 ok; {plant}"}
    )
    before = scene.outside.snapshot()
    first = scene.apply(both())
    assert _status(first["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    # A new runtime reads the manifest from disk; new settings make the enable run again.
    result = scene.apply(both(settings={"changed": True}))
    assert_contained(scene, result, before)
    status = _status(result["view"], "hostile")
    assert status["code"] == f"ProvisioningState/failed/{code}"
    assert "HandlerManifest.json" in status["message"]
    assert reason in status["message"]


# -- config/ and the files the runtime writes there ----------------------------------------


def test_a_linked_config_dir_gets_no_handler_state(scene: Scene) -> None:
    plant = 'write_status success 0 ok; rm -rf "$dir/config"; ln -s "$OUTSIDE" "$dir/config"'
    scene.packages.build(HOSTILE, "1.0.0", actions={"enable": plant})
    before = scene.outside.snapshot()
    result = scene.apply(both())  # HandlerState is written after the enable
    assert_contained(scene, result, before)
    assert _status(result["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    config = scene.state / "Hostile.Ext-1.0.0" / "config"
    assert stat.S_ISDIR(config.lstat().st_mode)  # a real dir again
    assert (config / "HandlerState").read_text() == "Enabled"


def test_a_linked_config_dir_gets_no_settings(scene: Scene) -> None:
    scene.packages.build(HOSTILE, "1.0.0")
    before = scene.outside.snapshot()
    scene.apply(both())
    # What a daemon the handler left running could do between two applies.
    config = scene.state / "Hostile.Ext-1.0.0" / "config"
    for child in config.iterdir():
        child.unlink()
    config.rmdir()
    config.symlink_to(scene.outside.path)
    result = scene.apply(both(settings={"changed": True}))  # 1.settings is written
    assert_contained(scene, result, before)
    assert _status(result["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    assert stat.S_ISDIR(config.lstat().st_mode)
    assert json.loads((config / "1.settings").read_text())["runtimeSettings"]


# -- the log dir: CommandExecution.log, events/ -------------------------------------------


@pytest.mark.parametrize(
    "plant",
    [
        f'{_PRELUDE}; rm -rf "$logdir"; ln -s "$OUTSIDE" "$logdir"',
        f'{_PRELUDE}; ln -sf "$OUTSIDE/precious" "$logdir/CommandExecution.log"',
        f'{_PRELUDE}; rm -f "$logdir/CommandExecution.log"; mkfifo "$logdir/CommandExecution.log"',
    ],
    ids=["log-dir-link", "log-file-link", "log-file-fifo"],
)
def test_the_command_log_is_not_written_through_what_the_handler_planted(
    scene: Scene, plant: str
) -> None:
    scene.packages.build(
        HOSTILE, "1.0.0", actions={"enable": f"write_status success 0 ok; {plant}"}
    )
    before = scene.outside.snapshot()
    result = scene.apply(both())
    assert_contained(scene, result, before)
    assert _status(result["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    log = scene.state / "log" / HOSTILE / "CommandExecution.log"
    assert not log.parent.is_symlink()
    assert stat.S_ISREG(log.lstat().st_mode)
    assert "===== " in log.read_text()  # the enable's entry, in the real log


def test_a_linked_events_dir_is_not_collected_from(scene: Scene) -> None:
    plant = f'{_PRELUDE}; rm -rf "$logdir/events"; ln -s "$OUTSIDE" "$logdir/events"'
    scene.packages.build(
        HOSTILE, "1.0.0", actions={"enable": f"write_status success 0 ok; {plant}"}
    )
    before = scene.outside.snapshot()
    result = scene.apply(both())
    assert_contained(scene, result, before)  # 1.json outside is still there
    events = scene.state / "log" / HOSTILE / "events"
    assert f"{events}: a symbolic link, not followed; no events collected" in scene.runtime_log()


def test_planted_event_files_are_skipped_and_removed(scene: Scene) -> None:
    plant = (
        f'{_PRELUDE}; mkfifo "$logdir/events/1.json"; truncate -s 1G "$logdir/events/2.json";'
        ' ln -s "$OUTSIDE/1.json" "$logdir/events/3.json"'
    )
    scene.packages.build(
        HOSTILE, "1.0.0", actions={"enable": f"write_status success 0 ok; {plant}"}
    )
    before = scene.outside.snapshot()
    result = scene.apply(both())
    assert_contained(scene, result, before)
    assert list((scene.state / "log" / HOSTILE / "events").iterdir()) == []


# -- an upgrade: mrseq and status/* carried over -------------------------------------------


def test_an_upgrade_carries_over_regular_files_only(scene: Scene) -> None:
    plant = (
        'write_status success 0 ok; echo 0 > "$dir/mrseq.real";'
        ' ln -s "$OUTSIDE/precious" "$dir/mrseq";'
        ' ln -s "$OUTSIDE/precious" "$dir/status/7.status";'
        ' mkfifo "$dir/status/8.status"; truncate -s 1G "$dir/status/9.status"'
    )
    scene.packages.build(HOSTILE, "1.0.0", actions={"enable": plant})
    scene.packages.build(HOSTILE, "2.0.0")
    before = scene.outside.snapshot()
    first = scene.apply(both("1.0"))
    assert_contained(scene, first, before)
    result = scene.apply(both("2.0"))
    assert_contained(scene, result, before)
    assert _status(result["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    new = scene.state / "Hostile.Ext-2.0.0"
    assert not os.path.lexists(new / "mrseq")
    assert sorted(p.name for p in (new / "status").iterdir()) == ["0.status"]
    log = scene.runtime_log()
    for name in ("mrseq", "status/7.status", "status/8.status", "status/9.status"):
        assert f"Hostile.Ext-1.0.0/{name}: not carried over: " in log


# -- a loose umask -------------------------------------------------------------------------


def test_under_umask_0_nothing_the_runtime_makes_is_writable_by_others(scene: Scene) -> None:
    """A service manager or shell with umask 000 must not make the state dir, the log dirs
    or the handler dirs writable by others: they could then change what runs as root."""
    # Well-behaved here; what its commands create gets the umask they inherit, which is
    # never looser than 022.
    scene.packages.build(
        HOSTILE,
        "1.0.0",
        actions={"enable": 'mkdir "$dir/made"; touch "$dir/made/file"; write_status success 0 ok'},
    )
    result = scene.apply(both(settings={"a": 1}), umask=0)
    assert _status(result["view"], "hostile")["code"] == "ProvisioningState/succeeded"
    assert (scene.state / f"{HOSTILE}-1.0.0" / "made" / "file").exists()
    loose = []
    for directory, dirs, files in os.walk(scene.state):
        for name in dirs + files:
            path = Path(directory, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o022 and not path.is_symlink():
                loose.append(f"{path.relative_to(scene.state)} {mode:04o}")
    assert loose == []
    assert stat.S_IMODE(scene.state.stat().st_mode) == 0o755
    assert stat.S_IMODE((scene.state / "log" / HOSTILE).stat().st_mode) == 0o755
    assert stat.S_IMODE((scene.state / ".exthandler" / "downloads").stat().st_mode) == 0o700


def test_under_umask_0_an_in_process_handler_dir_is_not_writable_by_others(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state" / "Contoso.Testing.Counter-1.0.0"
    directory.parent.mkdir()
    previous = os.umask(0)
    try:
        materialize(Counter, directory)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "HandlerManifest.json").stat().st_mode) == 0o644
