"""The agent's own section: the instance view's `agent` key and the status document's
`guestAgentStatus.updateStatus` (PROTOCOL.md section 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exthandler._report.view import AgentView, InstanceView, UpdateView, read_instance_view
from exthandler._upload.document import AgentStatus, OsInfo, build_document

UPDATE = UpdateView(
    expected_version="0.2.1", status="Transitioning", code=0, message="installing agent 0.2.1"
)


def test_the_view_shows_the_agent_and_reads_it_back(tmp_path: Path) -> None:
    view = InstanceView(
        goal_state_id="g", extensions=(), agent=AgentView(version="0.2.0", update=UPDATE)
    )
    data = view.to_json()
    assert data["agent"] == {
        "version": "0.2.0",
        "updateStatus": {
            "expectedVersion": "0.2.1",
            "status": "Transitioning",
            "code": 0,
            "message": "installing agent 0.2.1",
        },
    }
    assert InstanceView.from_json(data) == view
    # Without self-update, only the version; without the key, no agent section at all.
    bare = InstanceView(goal_state_id="g", extensions=(), agent=AgentView(version="0.2.0"))
    assert bare.to_json()["agent"] == {"version": "0.2.0"}
    assert "agent" not in InstanceView(goal_state_id="g", extensions=()).to_json()
    # An unreadable agent section is left out, not an error (it is the runtime's own).
    (tmp_path / ".exthandler").mkdir()
    (tmp_path / ".exthandler" / "instance-view.json").write_text(
        json.dumps({**data, "agent": {"version": 3}})
    )
    read = read_instance_view(tmp_path)
    assert read is not None
    assert read.agent is None


def _document(view: InstanceView) -> dict[str, object]:
    return build_document(
        view,
        goal=None,
        outcome=None,
        agent=AgentStatus(ready=True, message="ok"),
        agent_version="0.2.0",
        os=OsInfo(computer_name="vm", os_name="linux", os_version="1"),
        now="2026-12-01T00:00:00Z",
    )


def test_the_status_document_reports_the_update() -> None:
    view = InstanceView(
        goal_state_id="g", extensions=(), agent=AgentView(version="0.2.0", update=UPDATE)
    )
    guest = _document(view)["aggregateStatus"]["guestAgentStatus"]  # type: ignore[index]
    assert guest == {
        "version": "0.2.0",
        "status": "Ready",
        "formattedMessage": {"lang": "en-US", "message": "ok"},
        "updateStatus": {
            "expectedVersion": "0.2.1",
            "status": "Transitioning",
            "code": 0,
            "formattedMessage": {"lang": "en-US", "message": "installing agent 0.2.1"},
        },
    }
    plain = InstanceView(goal_state_id="g", extensions=(), agent=AgentView(version="0.2.0"))
    assert "updateStatus" not in _document(plain)["aggregateStatus"]["guestAgentStatus"]  # type: ignore[index]


def test_status_shows_the_self_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exthandler._cli.main import main

    view = InstanceView(
        goal_state_id="g", extensions=(), agent=AgentView(version="0.2.0", update=UPDATE)
    )
    (tmp_path / ".exthandler").mkdir()
    (tmp_path / ".exthandler" / "instance-view.json").write_text(json.dumps(view.to_json()))
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        "agent 0.2.0: self-update Transitioning, expected 0.2.1: installing agent 0.2.1"
    )
