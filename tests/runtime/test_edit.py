"""Editing a native goal-state file: protected settings in clear stay private."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exthandler._cli.edit import delete_extension, set_extension


def _set(path: Path, name: str, **fields: Any) -> None:
    set_extension(
        path, name=name, publisher="Contoso.Examples", type_="Hello", version="1.0", **fields
    )


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_readable_goal_file_is_made_private_when_it_gets_secrets(tmp_path: Path) -> None:
    goal = tmp_path / "goal.json"
    goal.write_text('{"extensions": []}\n')
    goal.chmod(0o644)
    _set(goal, "hello", settings={"greeting": "hi"})
    assert _mode(goal) == 0o644  # no secret in it: its mode is the owner's choice
    _set(goal, "hello", protected_settings={"password": "hunter2"})
    assert _mode(goal) == 0o600
    assert json.loads(goal.read_text())["extensions"][0]["protectedSettings"] == {
        "password": "hunter2"
    }


def test_a_goal_file_that_still_holds_secrets_stays_private(tmp_path: Path) -> None:
    goal = tmp_path / "goal.json"
    _set(goal, "secret", protected_settings={"k": "v"})
    _set(goal, "other")
    goal.chmod(0o644)  # widened by hand
    _set(goal, "other", settings={"a": 1})
    assert _mode(goal) == 0o600
    delete_extension(goal, name="secret")
    goal.chmod(0o644)
    _set(goal, "other", settings={"a": 2})
    assert _mode(goal) == 0o644  # no secret left
