"""The handler records: a snapshot and a group-committed journal, in `.exthandler`.

records.json holds every record as of a generation; the journal holds the changes since,
one JSON line each, appended and flushed in batches: the steps that finish while a flush
is under way share the next one. Loading replays the journal over the snapshot, then
compacts: a new snapshot (generation + 1), then a fresh journal with that generation. A
journal whose generation is not the snapshot's is already in it (a crash came between the
two writes) and is ignored. Records that cannot be read are rebuilt (see recover.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from exthandler_sdk.protocol import NOT_RUN, HandlerState

from .._errors import StateDirError
from .._fs import append_durable, read_regular, write_atomic
from .._model import HandlerName, Version
from .._plan.planner import ExtensionRecord, HandlerRecord, UpgradePhase, UpgradeRecord
from .statedir import OWN_FILE_LIMIT, StateDir

__all__ = ["Journal", "RecordCodec"]


class RecordCodec:
    """Handler records to and from the JSON values records.json and the journal hold.

    A record is an object of its fields (every field, defaults included); a name or a
    version is its text, a state its value, an upgrade phase its number. Reading takes
    what writing gives, ignores keys it does not know, takes a missing field's default,
    and raises ValueError, TypeError or KeyError for anything else. Hand-written: a
    generic converter costs more to import than every record of a pass costs to read.
    """

    def unstructure(self, record: HandlerRecord) -> dict[str, Any]:
        upgrade = record.upgrade
        return {
            "handler": str(record.handler),
            "version": None if record.version is None else str(record.version),
            "state": record.state.value,
            "extensions": [
                {
                    "name": ext.name,
                    "sequence_number": ext.sequence_number,
                    "settings_digest": ext.settings_digest,
                    "enabled": ext.enabled,
                    "converged": ext.converged,
                }
                for ext in record.extensions
            ],
            "upgrade": None
            if upgrade is None
            else {
                "source": str(upgrade.source),
                "target": str(upgrade.target),
                "phase": int(upgrade.phase),
                "disable_exit_codes": dict(upgrade.disable_exit_codes),
                "failed": upgrade.failed,
            },
            "failed": record.failed,
            "failed_package": record.failed_package,
            "uninstall_exit_code": record.uninstall_exit_code,
            "last_errors": {k: [code, text] for k, (code, text) in record.last_errors.items()},
        }

    def structure(self, value: Any, kind: type[HandlerRecord] = HandlerRecord) -> HandlerRecord:
        data = _object(value, "record")
        version = data.get("version")
        upgrade = data.get("upgrade")
        return HandlerRecord(
            handler=HandlerName.parse(data["handler"]),
            version=None if version is None else Version.parse(version),
            state=HandlerState(data.get("state", HandlerState.NOT_INSTALLED.value)),
            extensions=tuple(_extension(e) for e in _list(data.get("extensions", ()))),
            upgrade=None if upgrade is None else _upgrade(upgrade),
            failed=_optional_text(data.get("failed")),
            failed_package=_optional_text(data.get("failed_package")),
            uninstall_exit_code=str(data.get("uninstall_exit_code", NOT_RUN)),
            last_errors={
                str(k): _error(v) for k, v in _object(data.get("last_errors", {}), "").items()
            },
        )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what or 'a value'}: not an object")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{value!r}: not a list")
    return list(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _extension(value: Any) -> ExtensionRecord:
    data = _object(value, "extension")
    return ExtensionRecord(
        name=str(data["name"]),
        sequence_number=int(data.get("sequence_number", 0)),
        settings_digest=str(data.get("settings_digest", "")),
        enabled=bool(data.get("enabled", False)),
        converged=_optional_text(data.get("converged")),
    )


def _upgrade(value: Any) -> UpgradeRecord:
    data = _object(value, "upgrade")
    return UpgradeRecord(
        source=Version.parse(data["source"]),
        target=Version.parse(data["target"]),
        phase=UpgradePhase(int(data.get("phase", UpgradePhase.FETCHED))),
        disable_exit_codes={
            str(k): str(v) for k, v in _object(data.get("disable_exit_codes", {}), "").items()
        },
        failed=bool(data.get("failed", False)),
    )


def _error(value: Any) -> tuple[int, str]:
    code, text = _list(value)  # ValueError unless exactly two
    return int(code), str(text)


class _Batch:
    """Journal lines waiting for the same flush."""

    lines: list[bytes]
    done: anyio.Event

    def __init__(self, lines: list[bytes] | None = None, done: anyio.Event | None = None) -> None:
        self.lines = [] if lines is None else lines
        self.done = anyio.Event() if done is None else done


class Journal:
    """The handler records of a state dir held by this runtime (see the module doc)."""

    state: StateDir
    converter: RecordCodec
    _journal_fd: int | None
    _pending: _Batch
    _flushing: bool
    # The state dir's I/O threads (see Store.io_limiter): an fsync waits in one of them.
    limiter: anyio.CapacityLimiter | None

    def __init__(
        self,
        state: StateDir,
        converter: RecordCodec | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.state = state
        self.converter = RecordCodec() if converter is None else converter
        self._journal_fd = None
        self._pending = _Batch()
        self._flushing = False
        self.limiter = limiter

    @property
    def snapshot_path(self) -> Path:
        return self.state.meta / "records.json"

    @property
    def journal_path(self) -> Path:
        return self.state.meta / "journal"

    def load(self) -> dict[HandlerName, HandlerRecord]:
        """Every handler record.

        Records that cannot be read (a damaged records.json, a record that no longer
        structures) are rebuilt from the handler dirs (see `recover.py`), never forgotten:
        a forgotten handler would be fetched and installed again over itself.
        """
        snapshot, damaged = self._read_snapshot()
        generation = snapshot.get("generation", 0)
        raw: dict[str, Any] = dict(snapshot.get("records") or {})
        journal = self._journal_bytes()
        lines = self._journal_lines(journal)
        # A damaged snapshot has no generation to match: the journal's whole records are
        # still the newest word on their handlers.
        if lines and (damaged or lines[0].get("generation") == generation):
            for entry in lines[1:]:
                key = entry.get("key")
                if isinstance(key, str):
                    raw[key] = entry.get("record")
        records: dict[HandlerName, HandlerRecord] = {}
        dropped = False
        for key, value in raw.items():
            if value is None:
                continue
            try:
                record = self.converter.structure(value, HandlerRecord)
            except (ValueError, TypeError, KeyError) as exc:
                self.state.log(f"record {key!r} is unreadable: {exc}")
                dropped = True
                continue
            records[record.handler] = record
        if damaged or dropped:
            self._recover(records)
        if snapshot and not dropped and journal == self._journal_header(generation):
            # Nothing happened since the last compaction (a re-apply that ran no step):
            # the snapshot is current and the empty journal goes on as it is.
            if self._journal_fd is None:
                self._journal_fd = self._open_journal()
            return records
        self.compact(records, generation + 1)
        return records

    def _read_snapshot(self) -> tuple[dict[str, Any], bool]:
        """records.json's content, and whether it is damaged (there, but not a snapshot)."""
        path = self.snapshot_path
        try:
            data: Any = json.loads(read_regular(path, OWN_FILE_LIMIT))
        except FileNotFoundError:
            return {}, False
        except (ValueError, RecursionError) as exc:
            problem = f"not valid JSON ({exc})"
        except OSError as exc:
            raise StateDirError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
        else:
            if isinstance(data, dict) and isinstance(data.get("records", {}), dict):
                return data, False
            problem = "not a snapshot of handler records"
        # Kept for whoever wants to know what happened; the records are rebuilt.
        kept = path.with_name(f"{path.name}.damaged")
        with contextlib.suppress(OSError):
            os.replace(path, kept)
        self.state.log(f"{path} is damaged ({problem}); kept as {kept.name}")
        return {}, True

    def _recover(self, records: dict[HandlerName, HandlerRecord]) -> None:
        """Add a record rebuilt from its handler dir for every handler that has none."""
        from .._report.view import InstanceView
        from .recover import rebuild_records

        view, path = None, self.state.view_path
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RecursionError):
            view = InstanceView.from_json(json.loads(read_regular(path, OWN_FILE_LIMIT)))
        rebuilt = rebuild_records(self.state.root, skip=set(records), view=view)
        for handler, record in sorted(rebuilt.items(), key=lambda item: item[0].key):
            names = ", ".join(e.name for e in record.extensions) or "no extension"
            self.state.log(
                f"{handler}: record rebuilt from {handler}-{record.version}: {record.state}"
                f" ({names}); install does not run again, enable runs once more with the"
                " same sequence number"
            )
        records.update(rebuilt)

    def _journal_bytes(self) -> bytes:
        try:
            return read_regular(self.journal_path, OWN_FILE_LIMIT)
        except FileNotFoundError:
            return b""

    @staticmethod
    def _journal_header(generation: int) -> bytes:
        return json.dumps({"generation": generation}).encode() + b"\n"

    def _open_journal(self) -> int:
        return os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    @staticmethod
    def _journal_lines(text: bytes) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line (power loss mid-append): what follows is unusable
            if isinstance(entry, dict):
                lines.append(entry)
        return lines

    def compact(self, records: Mapping[HandlerName, HandlerRecord], generation: int) -> None:
        """Fold everything into a new snapshot and start an empty journal (both durable)."""
        document = {
            "generation": generation,
            "records": {h.key: self.converter.unstructure(r) for h, r in records.items()},
        }
        path = self.snapshot_path
        try:
            write_atomic(path, json.dumps(document, sort_keys=True).encode(), mode=0o600)
            path = self.journal_path
            write_atomic(path, self._journal_header(generation), mode=0o600)
            self.close()
            self._journal_fd = self._open_journal()
        except OSError as exc:
            raise StateDirError(
                f"{path}: cannot save the handler records: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def record_bytes(self, record: HandlerRecord) -> bytes:
        value = None if record.empty else self.converter.unstructure(record)
        entry = {"key": record.handler.key, "record": value}
        return json.dumps(entry, sort_keys=True).encode() + b"\n"

    async def save(self, record: HandlerRecord) -> None:
        """Persist a record durably (a record of nothing at all is deleted instead).

        Returns once the record is on disk. Concurrent saves are committed together: the
        first caller flushes whatever is pending, the others wait for that flush.
        """
        batch = self._pending
        batch.lines.append(self.record_bytes(record))
        if self._flushing:
            await batch.done.wait()
            return
        self._flushing = True
        try:
            # Shielded: the waiters depend on this flush, and it is short.
            with anyio.CancelScope(shield=True):
                while self._pending.lines:
                    batch, self._pending = self._pending, _Batch()
                    await self._append(b"".join(batch.lines))
                    batch.done.set()
        finally:
            self._flushing = False

    async def _append(self, data: bytes) -> None:
        if self._journal_fd is None:
            raise RuntimeError("records were not loaded: the journal is not open")
        try:
            await anyio.to_thread.run_sync(
                append_durable, self._journal_fd, data, limiter=self.limiter
            )
        except OSError as exc:
            # Progress that cannot be recorded must not go on: a crash would repeat it.
            raise StateDirError(
                f"{self.journal_path}: cannot record progress: {exc.strerror or exc}"
            ) from exc
