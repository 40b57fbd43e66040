"""Agent families in the four goal-state formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exthandler._errors import GoalStateError
from exthandler._goalstate import load_goal_state, parse_goal_state
from exthandler._model import AgentFamily, Version

FIXTURES = Path(__file__).resolve().parents[1] / "fleet" / "fixtures"


def test_native_agent_families() -> None:
    goal = parse_goal_state(
        json.dumps(
            {
                "extensions": [],
                "agentFamilies": [
                    {"name": "Prod", "version": "0.2.1", "uris": ["/m.xml", "/m.xml", "/n.xml"]},
                    {"name": "Test"},
                ],
            }
        ).encode()
    )
    assert goal.agent_families == (
        AgentFamily(name="Prod", version=Version.parse("0.2.1"), uris=("/m.xml", "/n.xml")),
        AgentFamily(name="Test"),
    )
    assert "uris" not in repr(goal.agent_families[0])  # they may carry a SAS


def test_native_agent_families_are_checked_like_the_rest() -> None:
    document = {
        "extensions": [],
        "agentFamilies": [
            {"name": "Pr.od", "versio": "1.0"},
            {"name": "Prod", "version": "x", "uris": ["ftp://host/m.xml"]},
            3,
        ],
    }
    with pytest.raises(GoalStateError) as caught:
        parse_goal_state(json.dumps(document).encode())
    problems = caught.value.problems
    assert "$.agentFamilies[0].versio: unknown key" in problems
    assert any(
        p.startswith("$.agentFamilies[0].name: 'Pr.od' is not an agent family") for p in problems
    )
    assert any(p.startswith("$.agentFamilies[1].version: ") for p in problems)
    assert any(p.startswith("$.agentFamilies[1].uris[0]: ") for p in problems)
    assert "$.agentFamilies[2]: must be an object, not a number" in problems


def test_extensions_config_ga_families() -> None:
    goal = load_goal_state(FIXTURES / "extensions_config.xml")
    assert goal.agent_families == (
        AgentFamily(
            name="Prod",
            version=Version.parse("2.13.1.1"),
            uris=("https://agents.example.test/Prod_manifest.xml",),
        ),
    )


def test_extensions_config_skips_what_it_cannot_use() -> None:
    xml = """<Extensions goalStateIncarnation="1"><GAFamilies>
      <GAFamily><Name>Prod</Name><Version>not.a.version</Version></GAFamily>
      <GAFamily><Version>1.0</Version></GAFamily>
      <GAFamily><Name>Bad.Name</Name></GAFamily>
    </GAFamilies><Plugins/></Extensions>"""
    goal = parse_goal_state(xml.encode())
    assert goal.agent_families == (AgentFamily(name="Prod"),)


def test_vm_settings_ga_families() -> None:
    document = {
        "extensionGoalStates": [],
        "GAFamilies": [
            {"Name": "Prod", "Version": "2.1.0", "Uris": ["https://a.test/m.xml"]},
            {"name": 7},
            "junk",
        ],
    }
    goal = parse_goal_state(json.dumps(document).encode())
    assert goal.agent_families == (
        AgentFamily(name="Prod", version=Version.parse("2.1.0"), uris=("https://a.test/m.xml",)),
    )
