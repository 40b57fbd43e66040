"""The service's configuration file: keys, types, `path: reason` problems, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from exthandler._cli.main import build_parser, main
from exthandler._service.config import (
    RUN_KEYS,
    ConfigError,
    given_options,
    load_config,
    read_settings,
)

FULL = """
source = "goals/current.json"
state_dir = "/var/lib/exthandler"
repo = ["repo", "https://example.com/packages"]
status_url = "https://example.com/status"
policy = "policy.json"
trusted_root = ["roots/a.pem"]
interval = 30
concurrency = 4
command_timeout = 600.5
no_extensions = false

[log]
file = "/var/log/exthandler.log"
max_bytes = 1048576
backups = 3

[self_update]
enabled = true
family = "Prod"
version = "1.2"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exthandler.toml"
    path.write_text(text)
    return path


def test_every_key_is_read_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, FULL))
    assert config.run == {
        "source": str(tmp_path / "goals/current.json"),
        "state_dir": "/var/lib/exthandler",
        "repo": [str(tmp_path / "repo"), "https://example.com/packages"],
        "status_url": "https://example.com/status",
        "policy": str(tmp_path / "policy.json"),
        "trusted_root": [str(tmp_path / "roots/a.pem")],
        "interval": 30.0,
        "concurrency": 4,
        "command_timeout": 600.5,
        "no_extensions": False,
    }
    assert config.log.file == Path("/var/log/exthandler.log")
    assert (config.log.max_bytes, config.log.backups) == (1048576, 3)
    assert config.self_update.enabled is True
    assert (config.self_update.family, config.self_update.version) == ("Prod", "1.2")


def test_defaults_without_tables(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ""))
    assert config.run == {}
    assert (config.log.file, config.log.max_bytes, config.log.backups) == (None, 10 << 20, 5)
    assert config.self_update.enabled is False


def test_every_problem_is_listed_as_path_reason(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'intervall = 5\nconcurrency = 0\nrepo = "one"\ntrusted_root = ["a", 3]\n'
        'no_extensions = "yes"\ninterval = true\n'
        "[log]\nmax_bytes = -1\nbackups = 2.5\nsize = 1\n"
        '[self_update]\nversion = "latest"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: intervall: unknown key; did you mean 'interval'?",
        f"{path}: concurrency: expected a whole number of at least 1, got 0",
        f"{path}: repo: expected an array of strings, not a string",
        f"{path}: trusted_root[1]: expected a string, not an integer",
        f"{path}: no_extensions: expected true or false, not a string",
        f"{path}: interval: expected a positive number of seconds, not a boolean",
        f"{path}: log.max_bytes: expected 0 (no rotation) or more bytes, got -1",
        f"{path}: log.backups: expected a whole number of files, not a number",
        f"{path}: log.size: unknown key",
        f"{path}: self_update.version: 'latest' is not a version"
        " (2 to 4 dot-separated integers, e.g. '2.1.3')",
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("interval = \n", "not valid TOML (Invalid value (at line 1, column 12))"),
        ("log = 3", "log: expected a table, not an integer"),
    ],
)
def test_a_file_that_is_not_a_configuration(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: {reason}"]


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    missing = tmp_path / "nope.toml"
    assert info.value.problems == [f"{missing}: cannot be read: No such file or directory"]


def test_config_check_exits_0_or_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, FULL)
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: valid configuration, 10 run option(s) set\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = 0\nwat = 1\n")
    assert main(["config", "check", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}: interval: expected a positive number of seconds, got 0",
        f"{bad}: wat: unknown key",
    ]


def test_every_run_option_is_a_key() -> None:
    """The file's keys are `run`'s long options: an option added to `run` needs its key."""
    parser = build_parser().parse_args(["run", "x"]).parser
    options = {
        action.dest
        for action in parser._actions
        if any(o.startswith("--") for o in action.option_strings) and action.dest != "help"
    }
    keys = {key.name for key in RUN_KEYS}
    assert options - {"config"} <= keys
    assert "source" in keys


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'source = "a.json"\nstate_dir = "s"\nrepo = ["r1"]\ninterval = 9\nno_extensions = true\n',
    )
    args = build_parser().parse_args(
        ["run", "b.json", "--config", str(path), "--interval", "2", "--repo", "r2"]
    )
    given = given_options(args)
    resolved, _ = read_settings(args, path, given)
    assert resolved.source == "b.json"
    assert resolved.interval == 2.0
    assert resolved.repo == ["r2"]
    assert resolved.state_dir == str(tmp_path / "s")
    assert resolved.no_extensions is True
    assert resolved.concurrency == 8  # nobody gave it: the default


def test_run_without_a_source_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "interval = 3\n")
    assert main(["run", "--config", str(path), "--state-dir", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == (
        f"exthandler: {path}: source: none given (give SOURCE, or `source` in the file)\n"
    )


def test_run_refuses_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "concurrency = 'many'\n")
    assert main(["run", "g.json", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"exthandler: {path}: concurrency: expected a whole number of at least 1, not a string\n"
    )
    assert not (tmp_path / "s").exists()


def test_the_default_file_is_read_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exthandler._service import config

    path = _write(tmp_path, "interval = -1\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", path)
    assert main(["run", "g.json"]) == 2
    assert f"{path}: interval:" in capsys.readouterr().err


def test_the_operating_page_documents_a_valid_file_and_every_key() -> None:
    import re

    from exthandler._service.config import parse_config

    page = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
    example = re.search(r"```toml\n(.*?)```", page, re.DOTALL)
    assert example is not None
    config = parse_config(example[1].encode(), Path("/etc/exthandler/exthandler.toml"))
    assert set(config.run) == {key.name for key in RUN_KEYS}
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", page, re.MULTILINE))
    assert documented == {key.name for key in RUN_KEYS} | set(config.flat())
