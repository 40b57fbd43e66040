"""The source-side fields of the goal-state formats (package locations) and the artifact
manifest, read from fixtures written after the reference agent's published formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exthandler import load_goal_state, parse_goal_state
from exthandler._errors import GoalStateError
from exthandler._model import Version
from exthandler._packages.artifacts import ManifestError, parse_version_manifest

FIXTURES = Path(__file__).parent / "fixtures"


def test_extensions_config_locations_in_order() -> None:
    goal = load_goal_state(FIXTURES / "extensions_config.xml")
    runner = goal.extension("Example.Fleet.Runner")
    assert runner is not None
    assert [loc.split("?")[0].split("/")[2] for loc in runner.package_locations] == [
        "primary.blob.core.windows.net",
        "secondary.blob.core.windows.net",
        "third.blob.core.windows.net",
        "fourth.blob.core.windows.net",
    ]
    assert runner.package_locations[0].endswith("sig=PRIMARYSIG")  # the SAS is kept, unescaped
    plain = goal.extension("Example.Fleet.Plain")
    assert plain is not None
    assert plain.package_locations == ()


def test_vm_settings_locations_in_order_without_duplicates() -> None:
    goal = load_goal_state(FIXTURES / "vm_settings.json")
    runner = goal.extension("Example.Fleet.Runner")
    assert runner is not None
    hosts = [loc.split("/")[2] for loc in runner.package_locations]
    assert hosts == [
        "primary.blob.core.windows.net",
        "secondary.blob.core.windows.net",
        "third.blob.core.windows.net",
    ]
    plain = goal.extension("Example.Fleet.Plain")
    assert plain is not None
    assert plain.package_locations == ()


def test_vm_settings_location_keys_are_case_insensitive() -> None:
    document = {
        "extensionGoalStates": [
            {
                "name": "A.B",
                "version": "1.0",
                "Location": "https://x.test/m.xml",
                "FAILOVERLOCATION": "https://y.test/m.xml",
                "additionalLocations": "not a list",
            }
        ]
    }
    goal = parse_goal_state(json.dumps(document))
    assert goal.extensions[0].package_locations == ("https://x.test/m.xml", "https://y.test/m.xml")


def native(**properties: object) -> bytes:
    extension = {"name": "r", "publisher": "Example.Fleet", "type": "Runner"}
    extension["typeHandlerVersion"] = "1.0"
    return json.dumps({"extensions": [{**extension, **properties}]}).encode()


def test_native_location_and_failover_locations() -> None:
    goal = parse_goal_state(
        native(
            location="s3://bucket/manifests/runner.xml",
            failoverLocations=["az://manifests/runner.xml", "/srv/manifests/runner.xml"],
        )
    )
    assert goal.extensions[0].package_locations == (
        "s3://bucket/manifests/runner.xml",
        "az://manifests/runner.xml",
        "/srv/manifests/runner.xml",
    )


def test_native_locations_are_checked_and_errors_redacted() -> None:
    with pytest.raises(GoalStateError) as info:
        parse_goal_state(
            native(location="ftp://user:hunter2@host/m.xml", failoverLocations=[7, ""])
        )
    problems = info.value.problems
    assert any(p.startswith("$.extensions[0].location: ") for p in problems)
    assert any(p.startswith("$.extensions[0].failoverLocations[0]: ") for p in problems)
    assert any(p.startswith("$.extensions[0].failoverLocations[1]: ") for p in problems)
    assert "hunter2" not in str(info.value)


def test_plugin_version_manifest() -> None:
    plugins = parse_version_manifest((FIXTURES / "plugin_version_manifest.xml").read_bytes())
    assert [(str(p.version), p.internal) for p in plugins] == [
        ("1.0.0", False),
        ("1.2.3", False),
        ("1.3.0", True),
    ]
    assert plugins[1].uris == (
        "https://pkgs.example.test/a/Example.Fleet__Runner__1.2.3",
        "https://pkgs.example.test/b/Example.Fleet__Runner__1.2.3",
    )
    assert plugins[1].disallow_major_upgrade
    assert plugins[0].version == Version.parse("1.0")


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<nope", "PluginVersionManifest: not valid XML"),
        (b"<Other/>", "other: not a PluginVersionManifest"),
        (
            b"<PluginVersionManifest><Plugins><Plugin><Version>1.0</Version></Plugin>"
            b"</Plugins></PluginVersionManifest>",
            "PluginVersionManifest/Plugins/Plugin[1]/Uris: no Uri",
        ),
        (
            b'<!DOCTYPE x [<!ENTITY a "aaaa">]><PluginVersionManifest/>',
            "PluginVersionManifest: refused XML",
        ),
    ],
)
def test_unusable_manifests_say_where(document: bytes, reason: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_version_manifest(document)
    assert any(p.startswith(reason) for p in info.value.problems), info.value.problems
