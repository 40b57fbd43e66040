"""Real packages whose commands log what they see, and a CLI driver that reads the log."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from exthandler._cli.main import main

OPERATIONS = ("install", "enable", "disable", "update", "uninstall")

# Every command appends one record to $EXTHANDLER_TEST_OPS: the operation, the handler
# dir it ran in, and the protocol variables it saw. The record is written to a temp file
# and appended with one write, so concurrent commands never interleave their records.
_LOGGER = r"""#!/bin/sh
op="$1"
dir=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp)
{
  echo "op=$op"
  echo "dir=$(basename "$dir")"
  echo "pid=$$"
  env | grep -E '^(ConfigSequenceNumber|ConfigExtensionName|VERSION)=' | sort
  env | grep -E '^AZURE_GUEST_AGENT_[A-Z_]*=' | sort
  echo "---"
} > "$tmp"
cat "$tmp" >> "$EXTHANDLER_TEST_OPS"
rm -f "$tmp"
status_file() {
  if [ -n "$ConfigExtensionName" ]; then
    echo "$dir/status/$ConfigExtensionName.$ConfigSequenceNumber.status"
  else
    echo "$dir/status/$ConfigSequenceNumber.status"
  fi
}
write_status() {
  f=$(status_file)
  printf '[{"version":1.0,"timestampUTC":"2026-11-25T12:00:00Z","status":{"name":"x",' > "$f.tmp"
  printf '"operation":"%s","status":"%s","code":%s,' "$op" "$1" "$2" >> "$f.tmp"
  printf '"formattedMessage":{"lang":"en-US","message":"%s"}}}]' "$3" >> "$f.tmp"
  mv "$f.tmp" "$f"
}
"""

_DEFAULT_ACTIONS = {
    "enable": 'write_status success 0 "enabled $(basename "$dir") seq $ConfigSequenceNumber"',
}


@attrs.frozen(kw_only=True)
class OpRecord:
    """One command as the package saw it."""

    op: str
    dir: str
    pid: int
    env: Mapping[str, str]

    @property
    def short(self) -> str:
        """`op dir`, e.g. `enable Test.Ext-1.0.0`."""
        return f"{self.op} {self.dir}"


@attrs.define
class Packages:
    """Builds real handler packages into a repository dir."""

    repo: Path

    def build(
        self,
        name: str = "Test.Ext",
        version: str = "1.0.0",
        *,
        actions: Mapping[str, str] | None = None,
        manifest: Mapping[str, Any] | None = None,
        files: Mapping[str, str] | None = None,
        entry: Mapping[str, Any] | None = None,
    ) -> Path:
        """A package whose every command logs itself, then runs `actions[op]` (sh);
        `entry` adds keys to the manifest's element 0 (e.g. `signingInfo`)."""
        steps = {**_DEFAULT_ACTIONS, **(actions or {})}
        body: dict[str, Any] = {f"{op}Command": f"bin/{op}.sh" for op in OPERATIONS}
        body.update(manifest or {})
        path = self.repo / f"{name}__{version}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(
                "HandlerManifest.json",
                json.dumps(
                    [{"name": name, "version": 1.0, "handlerManifest": body, **(entry or {})}]
                ),
            )
            for op in OPERATIONS:
                script = f"{_LOGGER}\n{steps.get(op, '')}\nexit 0\n"
                info = zipfile.ZipInfo(f"bin/{op}.sh")
                info.external_attr = 0o755 << 16
                archive.writestr(info, script.replace('op="$1"', f'op="{op}"'))
            for file_name, text in (files or {}).items():
                archive.writestr(file_name, text)
        return path


@attrs.define
class Agent:
    """Runs the CLI against one state dir and reads what the packages logged."""

    root: Path
    repo: Path
    ops_log: Path
    goal_path: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    def apply(self, goal: Mapping[str, Any] | str, *extra: str) -> tuple[int, dict[str, Any]]:
        """Apply a goal (a dict is written as native JSON) and return (exit, instance view)."""
        if isinstance(goal, str):
            self.goal_path.write_text(goal)
        else:
            self.goal_path.write_text(json.dumps(goal))
        code, out = self.cli(
            "apply",
            str(self.goal_path),
            "--state-dir",
            str(self.state),
            "--repo",
            str(self.repo),
            "--json",
            *extra,
        )
        return code, json.loads(out) if out.strip() else {}

    def cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    def ops(self) -> list[OpRecord]:
        """Every command run so far, in order."""
        if not self.ops_log.exists():
            return []
        records = []
        for block in self.ops_log.read_text().split("---\n"):
            lines = [line for line in block.splitlines() if "=" in line]
            if not lines:
                continue
            values = dict(line.split("=", 1) for line in lines)
            records.append(
                OpRecord(
                    op=values.pop("op"),
                    dir=values.pop("dir"),
                    pid=int(values.pop("pid")),
                    env=values,
                )
            )
        return records

    def take_ops(self) -> list[OpRecord]:
        """The commands run since the last call."""
        ops = self.ops()
        self.ops_log.write_text("")
        return ops


def extension(
    name: str,
    handler: str = "Test.Ext",
    version: str = "1.0",
    **properties: Any,
) -> dict[str, Any]:
    """A native goal-state extension entry."""
    publisher, _, type_ = handler.rpartition(".")
    return {
        "name": name,
        "publisher": publisher,
        "type": type_,
        "typeHandlerVersion": version,
        **properties,
    }


def goal(*extensions: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"extensions": list(extensions)}
    if id is not None:
        document["id"] = id
    return document


def view_of(view: Mapping[str, Any], name: str) -> dict[str, Any]:
    for ext in view["extensions"]:
        if ext["name"] == name:
            return dict(ext)
    raise AssertionError(f"{name} not in the instance view: {view}")


def status_of(view: Mapping[str, Any], name: str) -> dict[str, str]:
    """The first status of extension `name` in an instance view."""
    statuses: list[dict[str, str]] = view_of(view, name)["statuses"]
    return statuses[0]


def wait_until(condition: Callable[[], bool], *, limit: float = 60.0, what: str = "") -> None:
    """Poll `condition` until it holds; a safety net of `limit` seconds turns a hang into a
    failure (it bounds a wait for an event, it does not time the code under test)."""
    import time

    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what or condition}"
        time.sleep(0.02)


def start_run(agent: Agent, source: Path) -> subprocess.Popen[bytes]:
    """`exthandler run SOURCE` for `agent`'s state dir and repository, polling every 0.1 s,
    as a real process (its standard error piped)."""
    argv = [sys.executable, "-m", "exthandler", "run", str(source)]
    argv += ["--state-dir", str(agent.state), "--repo", str(agent.repo), "--interval", "0.1"]
    return subprocess.Popen(argv, stderr=subprocess.PIPE)
