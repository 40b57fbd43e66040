"""The self-update part of docs/operating.md says what the code does: its examples are
checked against the parsers, the command line and the daemon's own lines."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from exthandler._cli.main import build_parser
from exthandler._goalstate import parse_goal_state
from exthandler._model import AgentFamily, Version
from exthandler._report.view import InstanceView
from exthandler._service.agents import LAUNCHER, AgentStore
from exthandler._service.daemon import Choice, Daemon

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


def _section() -> str:
    text = PAGE.read_text()
    start = text.index("## Self-update and rollback")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(kind: str) -> list[str]:
    """The section's unindented ```KIND blocks."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in _section().splitlines():
        if current is None:
            if line == f"```{kind}":
                current = []
        elif line == "```":
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    return blocks


def test_the_native_example_names_a_family() -> None:
    goal, view = (json.loads(block) for block in _blocks("json"))
    parsed = parse_goal_state(json.dumps(goal).encode())
    assert parsed.agent_families == (
        AgentFamily(
            name="Prod",
            version=Version.parse("0.2.3"),
            uris=("https://agents.example.com/Prod_manifest.xml",),
        ),
    )
    shown = InstanceView.from_json({"goalStateId": None, "extensions": [], **view})
    assert shown.to_json()["agent"] == view["agent"]


def test_the_commands_are_what_the_cli_takes() -> None:
    commands = [line for block in _blocks("") for line in block.splitlines() if line]
    assert [c.split()[:3] for c in commands if c.startswith("exthandler")] == [
        ["exthandler", "agent", "package"],
        ["exthandler", "agent", "list"],
    ]
    for command in commands:
        if command.startswith("exthandler "):
            build_parser().parse_args(shlex.split(command)[1:])


def test_the_rollback_line_is_the_daemons(tmp_path: Path) -> None:
    store = AgentStore(tmp_path)
    for version in ("0.2.3", "0.2.4"):
        launcher = store.launcher(Version.parse(version))
        launcher.parent.mkdir(parents=True)
        launcher.write_text("")
    lines: list[str] = []
    daemon = Daemon(store=store, say=lines.append, own=Version.parse("0.1.0"))
    old, new = (Choice(Version.parse(v), installed=True) for v in ("0.2.3", "0.2.4"))
    daemon.history = [old, new]
    for _ in range(3):
        assert daemon._failed(new, 1)
    documented = next(
        line.strip() for line in _section().splitlines() if line.strip().startswith("daemon: ")
    )
    assert documented in lines
    assert store.good() == [Version.parse("0.2.3")]
    assert daemon.choose() == old
    assert LAUNCHER == "bin/exthandler-agent"
    assert "`bin/exthandler-agent`" in _section()
