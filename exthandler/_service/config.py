"""The service's configuration file: TOML, keys named after `run`'s long options.

Every `run` option is a key (the long option name with `-` replaced by `_`), plus `source`,
a `[log]` table and a `[self_update]` table. The options are one table (`RUN_KEYS`):
adding an option to the file is one line there. Relative paths are relative to the
file's directory. Every problem is a line `FILE: key: reason`.
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "DEFAULT_CONFIG",
    "RUN_KEYS",
    "ConfigError",
    "LogSettings",
    "SelfUpdateSettings",
    "ServiceConfig",
    "config_path",
    "given_options",
    "load_config",
    "merge_into",
    "parse_config",
    "read_settings",
]

DEFAULT_CONFIG = Path("/etc/exthandler/exthandler.toml")
CONFIG_LIMIT = 1 << 20  # a configuration file is small; a bigger one is refused
DEFAULT_LOG_MAX_BYTES = 10 << 20
DEFAULT_LOG_BACKUPS = 5


class ConfigError(ValueError):
    """A configuration file that cannot be used; `problems` are `path: reason` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _Bad(Exception):
    """One value's problem (the reason; the caller adds where)."""


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _text(value: object, base: Path | None = None) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, not {_kind(value)}")
    if not value:
        raise _Bad("must not be empty")
    return value


def _url_or_path(value: object, base: Path) -> str:
    """A URL stays as written; a relative path is made relative to the file's dir."""
    text = _text(value)
    if "://" in text:
        return text
    return str(base / text)


def _path(value: object, base: Path) -> str:
    return str(base / _text(value))


def _list(item: Callable[[object, Path], str]) -> Callable[[object, Path], list[str]]:
    def parse(value: object, base: Path) -> list[str]:
        if not isinstance(value, list):
            raise _Bad(f"expected an array of strings, not {_kind(value)}")
        parsed = []
        for index, entry in enumerate(value):
            try:
                parsed.append(item(entry, base))
            except _Bad as exc:
                raise _Bad(f"[{index}]: {exc}") from None
        return parsed

    return parse


def _seconds(value: object, base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"expected a positive number of seconds, not {_kind(value)}")
    if not 0 < value < math.inf:
        raise _Bad(f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _count(value: object, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected a whole number of at least 1, not {_kind(value)}")
    if value < 1:
        raise _Bad(f"expected a whole number of at least 1, got {value}")
    return value


def _size(value: object, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected a whole number of bytes, not {_kind(value)}")
    if value < 0:
        raise _Bad(f"expected 0 (no rotation) or more bytes, got {value}")
    return value


def _backups(value: object, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected a whole number of files, not {_kind(value)}")
    if not 0 <= value <= 1000:
        raise _Bad(f"expected 0 to 1000 files, got {value}")
    return value


def _flag(value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, not {_kind(value)}")
    return value


def _family(value: object, base: Path) -> str:
    from .._goalstate._families import check_family_name

    try:
        return check_family_name(_text(value))
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _version(value: object, base: Path) -> str:
    from .._errors import VersionError
    from .._model import Version

    text = _text(value)
    try:
        Version.parse(text)
    except VersionError as exc:
        raise _Bad(str(exc)) from None
    return text


@attrs.frozen
class Key:
    """One key of the file: its name (also the `argparse` dest of `run`'s option), how its
    value is read, and the value when neither the file nor the command line gives one."""

    name: str
    parse: Callable[[object, Path], Any]
    default: Any = None


# `run`'s options, by long option name (`--state-dir` is `state_dir`), and `source`.
RUN_KEYS: tuple[Key, ...] = (
    Key("source", _url_or_path),
    Key("state_dir", _path),
    Key("repo", _list(_url_or_path)),
    Key("status_url", _url_or_path),
    Key("policy", _path),
    Key("trusted_root", _list(_path)),
    Key("interval", _seconds, 5.0),
    Key("concurrency", _count, 8),
    Key("command_timeout", _seconds),
    Key("no_extensions", _flag, False),
)

_LOG_KEYS: tuple[Key, ...] = (
    Key("file", _path),
    Key("max_bytes", _size, DEFAULT_LOG_MAX_BYTES),
    Key("backups", _backups, DEFAULT_LOG_BACKUPS),
)

_SELF_UPDATE_KEYS: tuple[Key, ...] = (
    Key("enabled", _flag, False),
    Key("family", _family),
    Key("version", _version),
    Key("auto_upgrade_minor", _flag, False),
)


@attrs.frozen
class LogSettings:
    """`[log]`: where the runtime's log goes (None: `<state dir>/exthandler.log`) and its
    rotation (`max_bytes` 0: never rotated here, left to logrotate)."""

    file: Path | None = None
    max_bytes: int = DEFAULT_LOG_MAX_BYTES
    backups: int = DEFAULT_LOG_BACKUPS


@attrs.frozen
class SelfUpdateSettings:
    """`[self_update]`: whether the agent updates itself, from which family (None: the
    goal state's first), pinned to which version (None: the newest the version rules
    allow), and whether it takes newer minor versions too (hotfixes it always takes)."""

    enabled: bool = False
    family: str | None = None
    version: str | None = None
    auto_upgrade_minor: bool = False


@attrs.frozen
class ServiceConfig:
    """A configuration file, read and checked: `run` holds the keys it gave of `RUN_KEYS`."""

    path: Path | None = None
    run: Mapping[str, Any] = attrs.field(factory=dict)
    log: LogSettings = LogSettings()
    self_update: SelfUpdateSettings = SelfUpdateSettings()

    def flat(self) -> dict[str, Any]:
        """The `[log]` and `[self_update]` values by dotted key (`log.max_bytes`)."""
        tables = {"log": attrs.asdict(self.log), "self_update": attrs.asdict(self.self_update)}
        return {f"{t}.{k}": v for t, values in tables.items() for k, v in values.items()}


def _table(
    where: str,
    prefix: str,
    document: Mapping[str, Any],
    keys: Sequence[Key],
    base: Path,
    problems: list[str],
    tables: Sequence[str] = (),
) -> dict[str, Any]:
    known = {key.name: key for key in keys}
    found: dict[str, Any] = {}
    for name, value in document.items():
        if name in tables:
            continue
        key = known.get(name)
        if key is None:
            import difflib

            close = difflib.get_close_matches(name, [*known, *tables], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: {prefix}{name}: unknown key{hint}")
            continue
        try:
            found[name] = key.parse(value, base)
        except _Bad as exc:
            reason = str(exc)
            joiner = "" if reason.startswith("[") else ": "
            problems.append(f"{where}: {prefix}{name}{joiner}{reason}")
    return found


def parse_config(data: bytes, path: Path) -> ServiceConfig:
    """Check a configuration file's content; ConfigError listing every problem."""
    where = str(path)
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: not valid TOML ({exc})"]) from None
    base = path.absolute().parent
    problems: list[str] = []
    run = _table(where, "", document, RUN_KEYS, base, problems, tables=("log", "self_update"))
    sections: dict[str, dict[str, Any]] = {}
    for name, keys in (("log", _LOG_KEYS), ("self_update", _SELF_UPDATE_KEYS)):
        table = document.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"{where}: {name}: expected a table, not {_kind(table)}")
            continue
        sections[name] = _table(where, f"{name}.", table, keys, base, problems)
    if problems:
        raise ConfigError(problems)
    log = sections.get("log", {})
    return ServiceConfig(
        path=path,
        run=run,
        log=LogSettings(
            file=Path(log["file"]) if "file" in log else None,
            max_bytes=log.get("max_bytes", DEFAULT_LOG_MAX_BYTES),
            backups=log.get("backups", DEFAULT_LOG_BACKUPS),
        ),
        self_update=SelfUpdateSettings(**sections.get("self_update", {})),
    )


def load_config(path: str | os.PathLike[str]) -> ServiceConfig:
    """Read and check the configuration file at `path` (a regular file, at most 1 MiB)."""
    import stat

    path = Path(path)
    try:
        # A link is followed: the administrator's /etc may be managed through links.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([f"{path}: not a regular file"])
            data = file.read(CONFIG_LIMIT + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read: {exc.strerror or exc}"]) from None
    if len(data) > CONFIG_LIMIT:
        raise ConfigError([f"{path}: larger than {CONFIG_LIMIT} bytes"])
    return parse_config(data, path)


def config_path(given: str | None) -> Path | None:
    """The file to read: the one given, else the default one when it exists."""
    if given is not None:
        return Path(given)
    return DEFAULT_CONFIG if os.path.lexists(DEFAULT_CONFIG) else None


def merge_into(args: argparse.Namespace, config: ServiceConfig, given: set[str]) -> None:
    """Set on `args` each `RUN_KEYS` value from `config`, except the options named in
    `given` (the command line wins); then each key's default where nothing gave one."""
    for key in RUN_KEYS:
        if key.name in given:
            continue
        if key.name in config.run:
            setattr(args, key.name, config.run[key.name])
        else:
            setattr(args, key.name, key.default)


def read_settings(
    args: argparse.Namespace, path: Path | None, given: set[str]
) -> tuple[argparse.Namespace, ServiceConfig]:
    """`run`'s arguments with the file at `path` (if any) under the command line's
    `given` options, and the file itself; ConfigError when it is invalid, or when
    neither gives a source."""
    config = load_config(path) if path is not None else ServiceConfig()
    resolved = argparse.Namespace(**vars(args))
    merge_into(resolved, config, given)
    if resolved.source is None:
        where = path or "run"
        raise ConfigError([f"{where}: source: none given (give SOURCE, or `source` in the file)"])
    return resolved, config


def given_options(args: argparse.Namespace) -> set[str]:
    """The `RUN_KEYS` the command line gave: those whose value is not the parser's
    unset value (None, or False for a flag)."""
    return {
        key.name
        for key in RUN_KEYS
        if getattr(args, key.name, None) is not None and getattr(args, key.name) is not False
    }
