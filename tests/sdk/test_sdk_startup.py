"""An enable of an already applied sequence number, the commonest command of an SDK
handler, is answered before the event loop, the settings converter or the cryptography
are imported; one that has work to do imports them as before."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.sdk.sample_handlers import NAME, Layout

# A handler module as authors write them: attrs settings, Context in the annotations,
# a plugin hook. It imports nothing the runner would not.
HANDLER = f'''\
from __future__ import annotations

import os

import attrs
from exthandler_sdk import Context, Handler, hookimpl


@attrs.frozen
class Settings:
    message: str


class Quiet(Handler[Settings, None]):
    name = "{NAME}"
    version = "1.0.0"

    async def enable(self, ctx: Context[Settings, None]) -> None:
        with open(ctx.handler_dir / "runs.log", "a") as log:
            log.write(f"enable {{ctx.sequence_number}}\\n")


@hookimpl
def exthandler_register_handlers() -> list[type[Handler[Settings, None]]]:
    return [Quiet]
'''
LOADED_TO_RUN = (
    "anyio",
    "asyncio",
    "cattrs",
    "cryptography",
    "exthandler_sdk._settings",
    # A handler module's `@hookimpl` marks its function without the plugin manager, and the
    # handler log's line is written without the logging machinery.
    "pluggy",
    "logging",
)


def enable(layout: Layout, source: Path, seq: int, *options: str) -> tuple[int, set[str]]:
    """`main_run` of `enable` in a fresh interpreter: its exit code and its modules."""
    argv = ["quiet_handler:Quiet", "enable", *options]
    script = (
        "import json, sys\n"
        "from exthandler_sdk._runner import main_run\n"
        f"code = main_run({argv!r})\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    env = layout.process_env(seq)
    env["PYTHONPATH"] = os.pathsep.join([str(source), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=layout.handler_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, set(modules)


def test_an_applied_sequence_is_answered_without_the_event_loop(
    layout: Layout, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "quiet_handler.py").write_text(HANDLER)
    layout.write_settings(0, {"message": "hi"})

    code, first = enable(layout, source, 0)
    assert code == 0
    assert layout.runs() == ["enable 0"]
    assert {"anyio", "cattrs"} <= first  # work to do: everything it needs is there

    code, again = enable(layout, source, 0)
    assert code == 0
    assert layout.runs() == ["enable 0"]  # not run again
    body = layout.status(0)["status"]
    assert (body["status"], body["operation"]) == ("success", "Enable")
    assert sorted(m for m in again if m.startswith(LOADED_TO_RUN)) == []
    # Both enables logged their start in the logger's format, the no-op one included.
    lines = (layout.log_dir / "Hello.log").read_text().splitlines()
    starts = [line for line in lines if line.endswith(")") and " starting (pid " in line]
    assert len(starts) == 2
    line_format = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ INFO enable seq 0 starting")
    assert all(line_format.match(line) for line in starts), starts


def test_a_package_enable_answers_an_applied_sequence_without_the_handler_module(
    layout: Layout, tmp_path: Path
) -> None:
    """`--runs-once-as` (what a package's bin/enable passes for a class whose enable runs
    once per sequence number): the handler module, attrs and the SDK's context are not
    even imported for an applied or older sequence; a new one runs as before."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "quiet_handler.py").write_text(HANDLER)
    layout.write_settings(0, {"message": "hi"})
    layout.write_settings(1, {"message": "hi"})
    once = ("--runs-once-as", NAME)

    code, first = enable(layout, source, 1, *once)
    assert code == 0
    assert layout.runs() == ["enable 1"]
    assert {"quiet_handler", "attrs", "anyio"} <= first

    for seq in (1, 0):  # the applied one, then an older one
        code, again = enable(layout, source, seq, *once)
        assert code == 0
        assert layout.runs() == ["enable 1"]
        assert not again & {"quiet_handler", "attrs", "cattrs", "exthandler_sdk._context"}
        assert sorted(m for m in again if m.startswith(LOADED_TO_RUN)) == []
    applied = layout.status(1)["status"]
    assert (applied["status"], applied["operation"]) == ("success", "Enable")
    assert "older than 1" in layout.status(0)["status"]["formattedMessage"]["message"]
    lines = (layout.log_dir / "Hello.log").read_text().splitlines()
    assert sum(" starting (pid " in line for line in lines) == 3

    layout.write_settings(2, {"message": "hi"})
    code, _ = enable(layout, source, 2, *once)
    assert code == 0
    assert layout.runs() == ["enable 1", "enable 2"]


def test_runs_once_as_must_name_a_handler(layout: Layout, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "quiet_handler.py").write_text(HANDLER)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exthandler_sdk",
            "run",
            "quiet_handler:Quiet",
            "enable",
            "--runs-once-as",
            "../x",
        ],
        cwd=layout.handler_dir,
        env=layout.process_env(0),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--runs-once-as: '../x' is not a handler name" in done.stderr
