"""The command line, in process (through `main`) and as a real subprocess."""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exthandler import __version__
from exthandler._cli.main import build_parser, default_state_dir, main
from tests.runtime.support import Agent, Packages, extension, goal, view_of

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


# -- the command line explains itself -------------------------------------------------


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's words and parser, the top level included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, argparse.ArgumentParser):  # not a command left unbuilt
                    yield from _commands(sub, (*path, name))


def test_help_describes_every_option_of_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = 0
    for path, parser in _commands(build_parser()):
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{' '.join(path)} {action.option_strings or action.dest}"
            assert " ".join(action.help.split()) in shown
            seen += 1
    assert seen > 30


def test_a_command_line_builds_only_its_command_and_still_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = dict(_commands(build_parser()))
    names = [path[0] for path in full if len(path) == 1]
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"    {name} " in listed or f"    {name}\n" in listed for name in names)
    for name in names:
        lazy = dict(_commands(build_parser(name)))
        # The command run is whole; the others are names, without a parser.
        assert {p for p in lazy if p[:1] == (name,)} == {p for p in full if p[:1] == (name,)}
        assert [p for p in lazy if len(p) == 1] == [(name,)]
        # The top level still knows them all: help lists them, a typo is told the names.
        with pytest.raises(SystemExit):
            main(["--help", name])
        assert capsys.readouterr().out == listed
    with pytest.raises(SystemExit):
        main(["aply", "goal.json"])
    told = capsys.readouterr().err
    assert "did you mean 'apply'" in told
    assert all(name in told for name in names)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["apply", "g.json", "--command-timeout", "abc"],
            "--command-timeout: expected a positive number of seconds, got 'abc'",
        ),
        (
            ["run", "goals", "--command-timeout=-1"],
            "--command-timeout: expected a positive number of seconds, got '-1'",
        ),
        (
            ["run", "goals", "--interval", "nan"],
            "--interval: expected a positive number of seconds, got 'nan'",
        ),
        (
            ["apply", "g.json", "--concurrency", "many"],
            "--concurrency: expected a whole number of at least 1, got 'many'",
        ),
        (
            ["apply", "g.json", "--concurrency", "0"],
            "--concurrency: expected a whole number of at least 1, got '0'",
        ),
    ],
)
def test_a_bad_value_says_what_was_expected(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"exthandler {argv[0]}: error: {message}\n" in err
    assert "invalid" not in err


@pytest.mark.parametrize(
    ("argv", "usage", "message"),
    [
        (
            ["apply", "g.json", "--repos", "r"],
            "exthandler apply",
            "unrecognized arguments: --repos r; did you mean --repo?",
        ),
        (
            ["status", "--stat-dir=/x"],
            "exthandler status",
            "unrecognized arguments: --stat-dir=/x; did you mean --state-dir?",
        ),
        (
            ["--json", "status"],
            "exthandler status",
            "unrecognized arguments: --json; --json goes after the command",
        ),
        (["aply", "g.json"], "exthandler", "unknown command 'aply'; did you mean 'apply'?"),
        (
            ["extension", "image", "lst"],
            "exthandler extension image",
            "unknown command 'lst'; did you mean 'list'? (commands: list)",
        ),
        (["frobnicate"], "exthandler", "unknown command 'frobnicate' (commands: apply,"),
    ],
)
def test_an_unknown_word_gets_a_suggestion(argv: list[str], usage: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exthandler", *argv], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"usage: {usage} [-h]")
    assert f"\n{usage}: error: {message}" in result.stderr


def _failing_enable(packages: Packages) -> None:
    packages.build(
        actions={
            "enable": "echo 'reading /etc/hello.conf' >&2\n"
            "echo 'hello: /etc/hello.conf: No such file or directory' >&2\nexit 3"
        }
    )


def test_apply_called_in_another_program_leaves_its_collector_alone(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str]
) -> None:
    """`exthandler apply` as its own process freezes what is alive once the runtime is
    open (nothing of it is garbage before the process exits); called in a program that
    goes on, it must not: what that program drops later would never be collected."""
    packages.build()
    agent.goal_path.write_text(json.dumps(goal(extension("one"))))
    frozen = gc.get_freeze_count()
    state = ["--state-dir", str(agent.state)]
    code, _, _ = run(capsys, "apply", str(agent.goal_path), "--repo", str(agent.repo), *state)
    assert code == 0
    assert gc.get_freeze_count() == frozen


def test_the_status_table_shows_the_cause_and_fits_the_terminal(
    agent: Agent,
    packages: Packages,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _failing_enable(packages)
    agent.goal_path.write_text(json.dumps(goal(extension("broken"))))
    state = ["--state-dir", str(agent.state)]
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "apply", str(agent.goal_path), "--repo", str(agent.repo), *state)
    assert code == 1
    cause = "Enable failed: exit code 3; stderr: hello: /etc/hello.conf: No such file or directory"
    assert re.split(r"  +", out.splitlines()[1]) == [
        "broken",
        "Test.Ext",
        "1.0.0",
        "Installed",
        "failed/1009",
        cause,
    ]
    code, status_out, _ = run(capsys, "status", *state)
    assert (code, status_out) == (0, out)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "status", *state)
    header, row = out.splitlines()
    assert len(row) == 80
    assert row.endswith("  " + cause[: 80 - header.index("MESSAGE") - 3] + "...")
    monkeypatch.setenv("COLUMNS", "30")  # the other columns keep their width
    code, out, _ = run(capsys, "status", *state)
    header, row = out.splitlines()
    assert row[header.index("MESSAGE") :] == cause[:17] + "..."


def test_status_of_one_extension_shows_its_whole_message(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_enable(packages)
    packages.build("Test.Good", actions={"enable": "echo all good\n" + _GOOD_STATUS})
    agent.apply(goal(extension("broken"), extension("good", "Test.Good")))
    capsys.readouterr()  # what apply printed
    state = ["--state-dir", str(agent.state)]
    code, out, err = run(capsys, "status", "BROKEN", *state)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:5] == [
        "name      broken",
        "type      Test.Ext",
        "version   1.0.0",
        "state     Installed",
        "sequence  0",
    ]
    assert re.fullmatch(r"status    failed/1009 \(Error, \S+Z\)", lines[5])
    assert lines[6:] == [
        "  Enable failed: exit code 3",
        "  [stderr]",  # stdout was empty: no [stdout] section
        "    reading /etc/hello.conf",
        "    hello: /etc/hello.conf: No such file or directory",
    ]
    code, out, _ = run(capsys, "status", "good", *state)
    assert "  good to go" in out.splitlines()
    code, out, _ = run(capsys, "status", "broken", "--json", *state)
    whole = json.loads((agent.state / ".exthandler" / "instance-view.json").read_text())
    assert json.loads(out) == view_of(whole, "broken")
    code, out, err = run(capsys, "status", "brokn", *state)
    assert (code, out) == (2, "")
    assert err == (
        f"exthandler: {agent.state}: no extension named 'brokn' in the instance view;"
        " did you mean 'broken'?\n"
    )
    code, _, err = run(capsys, "status", "zzz", *state)
    assert code == 2
    assert "did you mean" not in err


_GOOD_STATUS = 'write_status success 0 "good to go"'


def test_a_missing_repository_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXTHANDLER_REPO", raising=False)
    monkeypatch.setenv("EXTHANDLER_BOOT_ID_FILE", str(tmp_path / "boot_id"))
    (tmp_path / "boot_id").write_text("boot-1\n")
    missing = tmp_path / "no-such-repo"
    repos = ["--repo", str(EXAMPLES / "repo"), "--repo", str(missing)]
    code, out, err = run(capsys, "extension", "image", "list", *repos)
    assert (code, out, err) == (2, "", f"exthandler: --repo {missing} does not exist\n")
    warning = f"exthandler: warning: --repo {missing} does not exist\n"
    code, out, err = run(capsys, "validate", str(EXAMPLES / "goal.json"), *repos)
    assert (code, err) == (0, warning)
    assert "valid native goal state" in out
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, err = run(capsys, "apply", str(EXAMPLES / "goal.json"), *repos, *state, "--json")
    summary = "exthandler: 4 steps ran: 2 install, 2 enable\n"
    assert (code, err) == (0, warning + summary)  # the other repository served the goal
    assert len(json.loads(out)["extensions"]) == 2
    monkeypatch.setenv("EXTHANDLER_REPO", f"{EXAMPLES / 'repo'}:{missing}")
    code, _, err = run(capsys, "validate", str(EXAMPLES / "goal.json"))
    assert (code, err) == (
        0,
        f"exthandler: warning: $EXTHANDLER_REPO entry {missing} does not exist\n",
    )


def test_extension_set_keeps_an_existing_auto_upgrade_and_says_what_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    goal_file = tmp_path / "goal.json"
    goal_file.write_text(json.dumps(goal(extension("hello", "Contoso.Examples.Hello", "1.0"))))
    base = ["extension", "set", "--goal-state", str(goal_file), "--name", "hello"]
    base += ["--publisher", "Contoso.Examples", "--type", "Hello"]

    def entry(name: str = "hello") -> dict[str, Any]:
        return view_of(json.loads(goal_file.read_text()), name)

    code, out, _ = run(capsys, *base, "--version", "1.1")
    assert code == 0
    assert "autoUpgradeMinorVersion" not in entry()  # still the format's default: off
    assert out.splitlines() == [
        "hello: typeHandlerVersion 1.0 -> 1.1",
        "hello: autoUpgradeMinorVersion unchanged (not set, so false)",
    ]
    code, out, _ = run(capsys, *base, "--version", "1.1")
    assert (code, out) == (0, "hello: no change\n")
    code, out, _ = run(capsys, *base, "--version", "1.1", "--auto-upgrade-minor")
    assert out == "hello: autoUpgradeMinorVersion set to true\n"
    assert entry()["autoUpgradeMinorVersion"] is True
    code, out, _ = run(capsys, *base, "--version", "1.2", "--settings", '{"greeting": "hi"}')
    assert out.splitlines() == [
        "hello: typeHandlerVersion 1.1 -> 1.2",
        "hello: settings set",
        "hello: autoUpgradeMinorVersion unchanged (true)",
    ]
    assert entry()["autoUpgradeMinorVersion"] is True
    code, out, _ = run(
        capsys, *base, "--version", "1.2", "--no-auto-upgrade-minor", "--protected-settings", "{}"
    )
    assert out.splitlines() == [
        "hello: autoUpgradeMinorVersion true -> false",
        "hello: protectedSettings set",  # never its value
    ]
    new = [*base[:5], "other", *base[6:-1], "Notes", "--version", "2.0"]
    code, out, _ = run(capsys, *new)
    assert out == "other: added (Contoso.Examples.Notes 2.0, autoUpgradeMinorVersion true)\n"
    assert entry("other")["autoUpgradeMinorVersion"] is True  # as `az vm extension set`


def test_a_builtin_handler_without_its_distribution_says_what_to_install(tmp_path: Path) -> None:
    # An installation of exthandler without exthandler-plugins: the same site-packages
    # minus that distribution, with the workspace's own sources on the path.
    site = tmp_path / "site-packages"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.suffix != ".pth" and not entry.name.startswith("exthandler_plugins"):
            (site / entry.name).symlink_to(entry)
    (tmp_path / "boot_id").write_text("boot-1\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sdk"), str(site)]),
        "EXTHANDLER_BOOT_ID_FILE": str(tmp_path / "boot_id"),
    }
    env.pop("EXTHANDLER_REPO", None)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", *argv], env=env, capture_output=True, text=True, check=False
        )

    assert "ModuleNotFoundError" in cli("-c", "import exthandler_plugins").stderr
    goal_file = EXAMPLES / "customscript" / "goal.json"
    result = cli("-m", "exthandler", "apply", str(goal_file), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1, result.stderr
    assert re.split(r"  +", result.stdout.splitlines()[1])[:5] == [
        "inlineScript",
        "Microsoft.Azure.Extensions.CustomScript",
        "2.1",
        "NotInstalled",
        "failed/1004",
    ]
    result = cli("-m", "exthandler", "status", "inlinescript", "--state-dir", str(tmp_path / "s"))
    assert result.stdout.splitlines()[-1] == (
        "  no version of Microsoft.Azure.Extensions.CustomScript matches 2.* at or above 2.1"
        " (available: none); it is a built-in handler of exthandler-plugins:"
        ' pip install "exthandler[plugins]"'
    )


def test_validate_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    """`validate` parses without collector walks, and a host process gets them back."""
    import gc

    path = tmp_path / "goal.json"
    path.write_text('{"extensions": []}')
    assert gc.isenabled()
    assert main(["validate", str(path)]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["validate", str(path)]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
