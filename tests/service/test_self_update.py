"""Self-update with real processes: `exthandler daemon` starting this installation, its
child following the goal state's agent family to a built agent package, restarting into
it without running any extension command again, and going back from a version that
crashes at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exthandler import __version__
from exthandler._testing._ca import SigningCA
from tests.runtime.support import Agent, Packages, extension, goal, wait_until
from tests.service.conftest import Build
from tests.service.test_daemon import start_daemon

OWN = f"{__version__} (this installation)"


def _config(agent: Agent, **self_update: Any) -> Path:
    config = agent.root / "exthandler.toml"
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in self_update.items())
    config.write_text(
        f'source = "goal.json"\nstate_dir = "state"\nrepo = ["{agent.repo}"]\ninterval = 0.1\n'
        f'status_url = "status.json"\n\n[self_update]\nenabled = true\n{table}'
    )
    return config


def _view(agent: Agent) -> dict[str, Any]:
    path = agent.state / ".exthandler" / "instance-view.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _update(agent: Agent) -> dict[str, Any]:
    return dict(_view(agent).get("agent", {}).get("updateStatus", {}))


def _document(agent: Agent) -> dict[str, Any]:
    try:
        return dict(json.loads((agent.root / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def _goal_with_family(**family: Any) -> dict[str, Any]:
    document = goal(extension("ext"))
    document["agentFamilies"] = [{"name": "Prod", **family}]
    return document


def test_a_hotfix_takes_over_without_running_an_extension_command_again(
    agent: Agent, packages: Packages, agent_package: Build
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent_package("0.1.3", agent.repo)  # published beside the extensions
    agent.goal_path.write_text(json.dumps(_goal_with_family(version=__version__)))
    parent = start_daemon(_config(agent))
    try:
        wait_until(lambda: _update(agent).get("status") == "Success", what="Success")

        def uploaded() -> dict[str, Any]:
            document = _document(agent).get("aggregateStatus", {})
            return dict(document.get("guestAgentStatus", {}))

        wait_until(
            lambda: uploaded().get("updateStatus", {}).get("status") == "Success",
            what="Success uploaded",
        )
        guest = uploaded()
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    assert [version for version, _ in parent.started()] == [OWN, "0.1.3"]
    assert parent.said("self-update: agent 0.1.3 installed; restarting into it")
    assert parent.said(f"daemon: switching from {OWN} to 0.1.3")
    # The enable ran once, before the switch; the new version found nothing to do.
    assert [op.op for op in agent.ops()] == ["install", "enable"]
    view = _view(agent)
    assert view["agent"] == {
        "version": "0.1.3",
        "updateStatus": {
            "expectedVersion": "0.1.3",
            "status": "Success",
            "code": 0,
            "message": "running agent 0.1.3",
        },
    }
    assert guest["version"] == "0.1.3"
    assert guest["updateStatus"] == {
        "expectedVersion": "0.1.3",
        "status": "Success",
        "code": 0,
        "formattedMessage": {"lang": "en-US", "message": "running agent 0.1.3"},
    }
    assert (agent.state / "agent" / "selected").read_text().strip() == "0.1.3"


def test_a_version_that_crashes_at_start_is_rolled_back_from_and_reported(
    agent: Agent, packages: Packages, agent_package: Build
) -> None:
    packages.build("Test.Ext", "1.0.0")
    agent_package("0.1.4", agent.repo, crashing=True)
    agent.goal_path.write_text(json.dumps(_goal_with_family(version=__version__)))
    parent = start_daemon(_config(agent))
    try:
        wait_until(lambda: _update(agent).get("status") == "Error", limit=120, what="Error")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    shown = [version for version, _ in parent.started()]
    assert shown == [OWN, "0.1.4", "0.1.4", "0.1.4", OWN]
    assert (agent.state / "agent" / "0.1.4" / "bad").exists()
    assert parent.said(f"marked bad, going back to {OWN}")
    update = _update(agent)
    assert update["expectedVersion"] == "0.1.4"
    assert update["code"] == 1
    assert update["message"].startswith("agent 0.1.4 was marked bad (exited abnormally 3 times")
    assert update["message"].endswith(f"; staying on {__version__}")
    assert _view(agent)["agent"]["version"] == __version__
    assert [op.op for op in agent.ops()] == ["install", "enable"]
    # Not installed again: the mark stands.
    assert len(parent.said("self-update: installing agent 0.1.4")) == 1


def _manifest(path: Path, packages: dict[str, Path]) -> Path:
    plugins = "".join(
        f"<Plugin><Version>{version}</Version><Uris><Uri>{zip_path}</Uri></Uris></Plugin>"
        for version, zip_path in packages.items()
    )
    path.write_text(f"<PluginVersionManifest><Plugins>{plugins}</Plugins></PluginVersionManifest>")
    return path


def test_a_pinned_version_from_the_family_manifest(
    agent: Agent, packages: Packages, agent_package: Build
) -> None:
    packages.build("Test.Ext", "1.0.0")
    store = agent.root / "published"
    manifest = _manifest(
        agent.root / "Prod_manifest.xml",
        {v: agent_package(v, store) for v in ("0.1.2", "0.1.3")},
    )
    agent.goal_path.write_text(json.dumps(_goal_with_family(uris=[str(manifest)])))
    parent = start_daemon(_config(agent, version="0.1.2"))
    try:
        wait_until(lambda: _view(agent).get("agent", {}).get("version") == "0.1.2")
        wait_until(lambda: _update(agent).get("status") == "Success", what="Success")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    assert [version for version, _ in parent.started()] == [OWN, "0.1.2"]
    assert not (agent.state / "agent" / "0.1.3").exists()
    assert [op.op for op in agent.ops()] == ["install", "enable"]


@pytest.mark.parametrize(
    ("family", "settings", "expected", "message"),
    [
        (
            {"version": "1.0"},
            {},
            "1.0",
            f"agent 1.0 is another major version than {__version__}: self-update never"
            " crosses one (the machine's package manager does)",
        ),
        ({}, {"family": "Test"}, __version__, "the goal state names no agent family 'Test'"),
        (
            {"version": "0.1.3"},
            {},
            "0.1.3",
            "agent 0.1.3 is due, but `run` is not under `exthandler daemon`",
        ),
    ],
)
def test_what_is_not_taken_is_reported(
    agent: Agent,
    packages: Packages,
    agent_package: Build,
    family: dict[str, str],
    settings: dict[str, str],
    expected: str,
    message: str,
) -> None:
    import subprocess
    import sys

    packages.build("Test.Ext", "1.0.0")
    agent_package("0.1.3", agent.repo)
    agent_package("1.0.0", agent.repo)
    agent.goal_path.write_text(json.dumps(_goal_with_family(**family)))
    config = _config(agent, **settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "exthandler", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _update(agent).get("status") == "Error", what="Error")
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert _update(agent) == {
        "expectedVersion": expected,
        "status": "Error",
        "code": 1,
        "message": message,
    }
    assert f"self-update: {message}" in errors
    assert not (agent.state / "agent").exists()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> SigningCA:
    return SigningCA(tmp_path_factory.mktemp("agent-signing-ca"))


def test_a_policy_that_requires_signatures_covers_agent_versions(
    agent: Agent, packages: Packages, agent_package: Build, ca: SigningCA
) -> None:
    """An unsigned agent version is refused (and nothing of it installed) while the policy
    requires signatures; once its publisher signs it, it is taken."""
    packages.build("Test.Ext", "1.0.0")
    published = agent_package("0.1.3", agent.repo)
    policy = agent.root / "policy.json"
    policy.write_text(
        json.dumps({"policyVersion": "0.1.0", "extensionPolicies": {"signatureRequired": True}})
    )
    config = _config(agent)
    text = config.read_text().replace(
        "\n[self_update]",
        f'policy = "{policy}"\ntrusted_root = ["{ca.root.certificate_path}"]\n\n[self_update]',
    )
    config.write_text(text)
    # The extension itself is signed too, or the policy would refuse it.
    ca.sign_package(packages.build("Test.Ext", "1.0.0", entry=_SIGNING_INFO))
    agent.goal_path.write_text(json.dumps(_goal_with_family(version=__version__)))
    parent = start_daemon(config)
    try:
        wait_until(lambda: _update(agent).get("status") == "Error", what="the refusal")
        refused = _update(agent)
        assert not (agent.state / "agent" / "0.1.3").exists()
        ca.sign_package(published)
        # The next goal state (or the retry a minute later) checks again.
        again = _goal_with_family(version=__version__)
        again["id"] = "after-signing"
        agent.goal_path.write_text(json.dumps(again))
        wait_until(lambda: _update(agent).get("status") == "Success", what="Success")
    finally:
        code = parent.stop()
    assert code == 0, parent.lines
    assert refused["expectedVersion"] == "0.1.3"
    assert (
        "the policy requires a signed package, and this one is not signed" in (refused["message"])
    )
    assert [version for version, _ in parent.started()] == [OWN, "0.1.3"]
    assert [op.op for op in agent.ops()] == ["install", "enable"]


_SIGNING_INFO = {"signingInfo": {"type": "Ext", "publisher": "Test", "version": "1.0.0"}}
