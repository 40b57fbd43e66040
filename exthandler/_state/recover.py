"""Handler records read back from the state dir when the journal has lost them.

The journal is the runtime's memory of what ran. If `records.json` (or one record in it)
cannot be read, forgetting a handler would be worse than useless: its dir would be
deleted and fetched again, its install run a second time on a machine where it is
installed. Instead each handler dir tells what the protocol files say about it:

- `config/HandlerState` (and `config/<ext>.HandlerState`, multi-config): whether it was
  installed and enabled;
- `config/<seq>.settings` (or `<ext>.<seq>.settings`): the last sequence number it got;
- the last instance view: the names of single-config extensions.

A rebuilt extension keeps its sequence number and is marked `RECOVERED`: its next enable
runs with that same number (as after a reboot: extensions that keep `mrseq` skip work
they have done), and install never runs again on an installed handler.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from exthandler_sdk.protocol import CONFIG_DIR, HANDLER_STATE_NAME, parse_settings_file_name

from .._errors import PackageError, VersionError
from .._fs import open_dir, read_regular
from .._model import HandlerName, Version
from .._packages.manifest import MANIFEST_NAME, parse_manifest
from .._plan.planner import ExtensionRecord, HandlerRecord, HandlerState
from .._report.view import InstanceView

__all__ = ["RECOVERED", "rebuild_records"]

RECOVERED = "recovered"
"""The settings digest of a rebuilt extension: unknown, and taken as the goal's."""

_SMALL_FILE = 64 * 1024
_MULTI_STATE = re.compile(rf"\A(.+)\.{HANDLER_STATE_NAME}\Z")
# Installed first, then the most advanced: the dir a handler's record stands for.
_RANK = {
    HandlerState.ENABLED: 3,
    HandlerState.INSTALLED: 2,
    HandlerState.NOT_INSTALLED: 1,
    HandlerState.FAILED_UPGRADE: 0,
}


def rebuild_records(
    root: Path, *, skip: set[HandlerName], view: InstanceView | None
) -> dict[HandlerName, HandlerRecord]:
    """A record for each handler with a dir under `root` and no record in `skip`."""
    found: dict[HandlerName, list[tuple[Version, Path]]] = {}
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            handler_text, _, version_text = entry.name.rpartition("-")
            try:
                handler, version = HandlerName.parse(handler_text), Version.parse(version_text)
            except (ValueError, VersionError):
                continue
            if handler not in skip:
                found.setdefault(handler, []).append((version, Path(entry.path)))
    records: dict[HandlerName, HandlerRecord] = {}
    for handler, dirs in found.items():
        record = _rebuild(handler, dirs, view)
        if record is not None:
            records[handler] = record
    return records


def _rebuild(
    handler: HandlerName, dirs: list[tuple[Version, Path]], view: InstanceView | None
) -> HandlerRecord | None:
    ranked = sorted(
        (
            (_RANK[_state(path / CONFIG_DIR / HANDLER_STATE_NAME)], version, path)
            for version, path in dirs
        ),
        reverse=True,
    )
    _, version, directory = ranked[0]
    state = _state(directory / CONFIG_DIR / HANDLER_STATE_NAME)
    if state is HandlerState.FAILED_UPGRADE:
        return None  # nothing of it ran to the end: the planner fetches what the goal wants
    config = directory / CONFIG_DIR
    names = _listing(config)
    if _multi_config(directory):
        extensions = _multi_extensions(config, names)
    else:
        extensions = _single_extension(handler, config, names, state, view)
    return HandlerRecord(handler=handler, version=version, state=state, extensions=extensions)


def _single_extension(
    handler: HandlerName,
    config: Path,
    names: list[str],
    state: HandlerState,
    view: InstanceView | None,
) -> tuple[ExtensionRecord, ...]:
    parsed = (parse_settings_file_name(n) for n in names)
    sequences = [p[1] for p in parsed if p is not None and p[0] is None]
    if not sequences and state is HandlerState.NOT_INSTALLED:
        return ()
    name = None
    if view is not None:
        for ext in view.extensions:
            if ext.type.lower() == handler.key:
                name = ext.name
                break
    return (
        ExtensionRecord(
            name=name or handler.type,
            sequence_number=max(sequences, default=0),
            settings_digest=RECOVERED,
            enabled=state is HandlerState.ENABLED,
        ),
    )


def _multi_extensions(config: Path, names: list[str]) -> tuple[ExtensionRecord, ...]:
    sequences: dict[str, int] = {}
    for file_name in names:
        parsed = parse_settings_file_name(file_name)
        if parsed is not None and parsed[0] is not None:
            name, sequence = parsed[0], parsed[1]
            sequences[name] = max(sequence, sequences.get(name, sequence))
    enabled: dict[str, bool] = {}
    for file_name in names:
        match = _MULTI_STATE.match(file_name)
        if match is not None:
            enabled[match.group(1)] = _state(config / file_name) is HandlerState.ENABLED
    return tuple(
        ExtensionRecord(
            name=name,
            sequence_number=sequences.get(name, 0),
            settings_digest=RECOVERED,
            enabled=enabled.get(name, False),
        )
        for name in sorted({*sequences, *enabled})
    )


def _listing(directory: Path) -> list[str]:
    try:
        fd = open_dir(directory)  # a link in place of the dir is not listed
    except OSError:
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _read_small(path: Path) -> bytes | None:
    """A handler-dir file's bytes: no link followed (neither the file nor its dir), no FIFO
    waited on, at most 64 KiB; None when it cannot be had so."""
    try:
        fd = open_dir(path.parent)
    except OSError:
        return None
    try:
        return read_regular(path.name, _SMALL_FILE, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _state(path: Path) -> HandlerState:
    data = _read_small(path)
    text = data.decode("utf-8", "replace").strip() if data is not None else ""
    try:
        return HandlerState(text)
    except ValueError:
        return HandlerState.NOT_INSTALLED


def _multi_config(directory: Path) -> bool:
    data = _read_small(directory / MANIFEST_NAME)
    if data is None:
        return False
    try:
        return parse_manifest(data).supports_multiple_extensions
    except PackageError:
        return False
