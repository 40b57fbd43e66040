"""The command line, in process (through `main`) and as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exthandler import __version__
from exthandler._cli.main import default_state_dir, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_through_python_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exthandler", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"exthandler {__version__}"


def test_validate_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(EXAMPLES / "goal.json"))
    assert code == 0
    assert "valid native goal state example-1, 2 extension(s)" in out
    assert "hello: Contoso.Examples.Hello 1.0 enabled" in out


def test_validate_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    goal = tmp_path / "bad.json"
    goal.write_text(
        json.dumps(
            {
                "extensions": [
                    {"name": "a", "publisher": "P", "type": "T", "typeHandlerVersion": "latest"},
                    {
                        "name": "b",
                        "publisher": "P",
                        "type": "U",
                        "typeHandlerVersion": "1.0",
                        "colour": "red",
                    },
                ]
            }
        )
    )
    code, out, err = run(capsys, "validate", str(goal))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert any(line.startswith("$.extensions[0].typeHandlerVersion: ") for line in lines)
    assert any(line.startswith("$.extensions[1].colour") for line in lines)


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.json"))
    assert code == 2
    assert "nope.json: cannot read" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2


def test_image_list_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    code, out, _ = run(
        capsys, "extension", "image", "list", "--repo", str(EXAMPLES / "repo"), "--json"
    )
    assert code == 0
    images = json.loads(out)
    assert {"publisher": "Contoso.Examples", "type": "Hello", "version": "1.0.1"} in images
    assert {"publisher": "Contoso.Examples", "type": "Notes", "version": "2.0.0"} in images
    assert images == sorted(images, key=lambda i: (i["publisher"], i["type"], i["version"]))


def test_image_list_table_and_env_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTHANDLER_REPO", f"{tmp_path}:{EXAMPLES / 'repo'}")
    code, out, _ = run(capsys, "extension", "image", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["PUBLISHER", "TYPE", "VERSION"]
    assert ["Contoso.Examples", "Hello", "1.0.0"] in [line.split() for line in lines]
    starts = {tuple(m.start() for m in re.finditer(r"\S+", line)) for line in lines}
    assert len(starts) == 1  # the columns are aligned, as in the status table
    assert all(line == line.rstrip() for line in lines)


def test_image_list_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    code, out, err = run(capsys, "extension", "image", "list", "--repo", str(tmp_path))
    assert (code, out) == (0, "")
    assert "no handler packages found" in err
    code, out, _ = run(capsys, "extension", "image", "list", "--repo", str(tmp_path), "--json")
    assert json.loads(out) == []


def test_image_list_of_an_unlistable_repository_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    (tmp_path / "repo").write_text("a file, not a directory")
    code, out, err = run(capsys, "extension", "image", "list", "--repo", str(tmp_path / "repo"))
    assert (code, out) == (2, "")
    assert (
        err.strip()
        == f"exthandler: package repository {tmp_path / 'repo'} cannot be listed: Not a directory"
    )


def test_extension_set_creates_and_updates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    goal = tmp_path / "goal.json"
    base = [
        "extension",
        "set",
        "--goal-state",
        str(goal),
        "--publisher",
        "Contoso.Examples",
        "--type",
        "Hello",
    ]
    code, _, err = run(
        capsys,
        *base,
        "--name",
        "hello",
        "--version",
        "1.0",
        "--settings",
        '{"greeting": "hi"}',
        "--protected-settings",
        '{"k": "v"}',
    )
    assert (code, err) == (0, "")
    assert goal.stat().st_mode & 0o777 == 0o600
    code, _, _ = run(
        capsys, *base, "--name", "HELLO", "--version", "1.0.1", "--no-auto-upgrade-minor"
    )
    assert code == 0
    document = json.loads(goal.read_text())
    assert document["extensions"] == [
        {
            "name": "hello",
            "publisher": "Contoso.Examples",
            "type": "Hello",
            "typeHandlerVersion": "1.0.1",
            "autoUpgradeMinorVersion": False,
            "settings": {"greeting": "hi"},
            "protectedSettings": {"k": "v"},
        }
    ]
    code, _, _ = run(capsys, "validate", str(goal))
    assert code == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--settings", "{nope"], "--settings: not valid JSON"),
        (["--protected-settings", "[1]"], "--protected-settings: must be a JSON object"),
        (["--version", "latest"], "typeHandlerVersion"),
    ],
)
def test_extension_set_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    goal = tmp_path / "goal.json"
    goal.write_text('{"extensions": []}\n')
    argv = [
        "extension",
        "set",
        "--goal-state",
        str(goal),
        "--name",
        "x",
        "--publisher",
        "P",
        "--type",
        "T",
        "--version",
        "1.0",
        *extra,
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert goal.read_text() == '{"extensions": []}\n'  # nothing was changed


def test_extension_set_refuses_other_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    goal = tmp_path / "goal.xml"
    xml = (EXAMPLES / "goalstates" / "extensionsconfig.xml").read_bytes()
    goal.write_bytes(xml)
    code, _, err = run(
        capsys,
        "extension",
        "set",
        "--goal-state",
        str(goal),
        "--name",
        "x",
        "--publisher",
        "P",
        "--type",
        "T",
        "--version",
        "1.0",
    )
    assert code == 2
    assert "only native goal-state files can be edited" in err
    assert goal.read_bytes() == xml


def test_extension_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    goal = tmp_path / "goal.json"
    goal.write_bytes((EXAMPLES / "goal.json").read_bytes())
    goal.chmod(0o640)
    code, _, _ = run(capsys, "extension", "delete", "--name", "notes", "--goal-state", str(goal))
    assert code == 0
    assert [e["name"] for e in json.loads(goal.read_text())["extensions"]] == ["hello"]
    assert goal.stat().st_mode & 0o777 == 0o640  # the file keeps its mode
    code, _, err = run(capsys, "extension", "delete", "--name", "notes", "--goal-state", str(goal))
    assert code == 2
    assert "no extension named 'notes'" in err
    code, _, err = run(
        capsys, "extension", "delete", "--name", "x", "--goal-state", str(tmp_path / "none.json")
    )
    assert code == 2
    assert "no such goal-state file" in err


def test_default_state_dir() -> None:
    assert default_state_dir({"EXTHANDLER_STATE_DIR": "/x"}) == Path("/x")
    if os.geteuid() == 0:
        assert default_state_dir({}) == Path("/var/lib/exthandler")
