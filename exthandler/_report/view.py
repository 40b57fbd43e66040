"""The instance view: what the runtime reports about each extension (docs/instance-view.md).

`compose_status` is the one rule deciding which status an extension shows, from what the
extension wrote and how its command went; it is pure so that every case is tested.
`InstanceView.to_json` gives exactly the public JSON shape and `from_json` reads it back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exthandler_sdk import ExtHandlerError, Operation, StatusLevel

from .._fs import OWN_FILE_LIMIT, read_regular
from .._values import Value

if TYPE_CHECKING:  # a view read back from its file (`exthandler status`) needs no parser
    from exthandler_sdk.protocol import StatusReport, Substatus

__all__ = [
    "CommandFailure",
    "ExtensionView",
    "InstanceView",
    "InstanceViewError",
    "MessagePart",
    "StatusView",
    "SubstatusView",
    "ShownStatus",
    "align_columns",
    "compose_status",
    "error_view",
    "message_headline",
    "render_extension",
    "render_table",
    "split_message",
    "status_view",
    "substatus_view",
]

# level -> (code word, level name, displayStatus)
_MAPPING: dict[StatusLevel, tuple[str, str, str]] = {
    StatusLevel.SUCCESS: ("succeeded", "Info", "Provisioning succeeded"),
    StatusLevel.WARNING: ("succeeded", "Warning", "Provisioning succeeded"),
    StatusLevel.ERROR: ("failed", "Error", "Provisioning failed"),
    StatusLevel.TRANSITIONING: ("transitioning", "Info", "Transitioning"),
}
_KIND_NAMES = {str: "a string", int: "an integer", list: "a list"}
MESSAGE_COLUMN_WIDTH = 60
"""The longest MESSAGE shown by `render_table` when it is given no width."""
MESSAGE_MIN_WIDTH = 20
"""The narrowest MESSAGE `render_table` cuts to, however narrow the terminal."""


class InstanceViewError(ExtHandlerError, ValueError):
    """A document is not an instance view; the message lists `path: reason`."""


class StatusView(Value):
    """An extension's top-level status, as shown in `statuses`."""

    code: str
    level: str
    display_status: str
    message: str
    time: str | None = None


class SubstatusView(Value):
    """One entry of `substatuses` (from the extension's own substatus list)."""

    code: str
    level: str
    display_status: str
    message: str


class ExtensionView(Value):
    """One extension: its handler, version, persisted handler state and statuses."""

    name: str
    type: str
    type_handler_version: str
    handler_state: str
    sequence_number: int | None
    statuses: tuple[StatusView, ...]
    substatuses: tuple[SubstatusView, ...]


class CommandFailure(Value):
    """A handler command that failed: non-zero exit or timeout.

    `code` is the protocol code (1009 for enable, 1011 for a timeout, ...); `description`
    says what happened ("Enable failed: exit code 3"); `excerpt` is the output tail as
    `[stdout]\\n...\\n\\n[stderr]\\n...`.
    """

    operation: Operation
    code: int
    description: str
    excerpt: str

    @property
    def text(self) -> str:
        """The description followed by the output excerpt, as shown in a status message."""
        return " ".join(part for part in (self.description, self.excerpt) if part)


def status_view(level: StatusLevel, code: int, message: str, time: str | None) -> StatusView:
    """Map a status level to the view's code, level and displayStatus.

    As docs/instance-view.md#status-mapping tabulates: `ProvisioningState/<word>`, the
    level name and the display text.
    """
    word, level_name, display = _MAPPING[level]
    status_code = f"ProvisioningState/{word}"
    if level is StatusLevel.ERROR:
        status_code = f"{status_code}/{code}"
    return StatusView(
        code=status_code, level=level_name, display_status=display, message=message, time=time
    )


def substatus_view(sub: Substatus) -> SubstatusView:
    """`ComponentStatus/<name>/<succeeded|failed|transitioning>` with the status mapping."""
    word, level_name, display = _MAPPING[sub.status]
    return SubstatusView(
        code=f"ComponentStatus/{sub.name}/{word}",
        level=level_name,
        display_status=display,
        message=sub.message,
    )


def error_view(code: int, message: str, now: str) -> StatusView:
    """A runtime-level error (download 1004, extraction 1005, ...) for an extension."""
    return status_view(StatusLevel.ERROR, code, message, now)


def _join(first: str, second: str) -> str:
    return f"{first}\n{second}" if first and second else first or second


class ShownStatus(Value):
    """What an extension shows: its level (typed), its status and its substatuses."""

    level: StatusLevel
    status: StatusView
    substatuses: tuple[SubstatusView, ...]


def _shown(
    level: StatusLevel,
    code: int,
    message: str,
    time: str | None,
    substatuses: tuple[SubstatusView, ...],
) -> ShownStatus:
    return ShownStatus(
        level=level, status=status_view(level, code, message, time), substatuses=substatuses
    )


def compose_status(
    report: StatusReport | None,
    failure: CommandFailure | None,
    *,
    ran_ok: bool,
    operation: Operation | None,
    now: str,
) -> ShownStatus:
    """Decide the status an extension shows (docs/instance-view.md, "Which status ...").

    - A terminal report (success/warning/error, including an invalid file as error 1012)
      is authoritative: its level, code, message and substatus.
    - If the command also failed, the status is an error all the same (a failing command
      always shows as one): the extension's own code wins when it gave one (non-zero),
      else the failure's, and the failure is appended to the extension's message.
    - A failed command without a terminal report: error with the failure's code, the
      message being the failure's description and output excerpt.
    - A command that succeeded without any report: success, noting the missing status.
    - Otherwise (a transitioning report, or no report and no command): transitioning.
      Whether "no report, no command" should be shown at all is the caller's decision.

    `time` is the report's `timestampUTC` when the report is authoritative and has one,
    else `now`. A transitioning report's substatus is kept in every case.
    """
    substatuses = tuple(substatus_view(sub) for sub in report.substatus) if report else ()
    if report is not None and report.status.terminal:
        time = report.timestamp or now
        if failure is None:
            return _shown(report.status, report.code, report.message, time, substatuses)
        code = report.code or failure.code
        message = _join(report.message, failure.text)
        return _shown(StatusLevel.ERROR, code, message, time, substatuses)
    if failure is not None:
        return _shown(StatusLevel.ERROR, failure.code, failure.text, now, substatuses)
    if report is None and ran_ok:
        title = operation.display_name if operation is not None else "The command"
        message = f"{title} succeeded; the extension wrote no status file"
        return _shown(StatusLevel.SUCCESS, 0, message, now, ())
    message = report.message if report is not None else ""
    return _shown(StatusLevel.TRANSITIONING, 0, message, now, substatuses)


class SourceView(Value):
    """The health of the goal-state source of `exthandler run` (the view's `source` key).

    `status` is `Ready` (the last look at the source worked), `Unreachable` (it could not
    be read: the last good goal state stays applied) or `Invalid` (it holds a goal state
    that does not parse: likewise). `message` says why, `since` when the source left
    `Ready` (null while Ready), `lastSuccess` when it last answered, and `failures` how
    many looks in a row failed. `location` never holds a credential.
    """

    location: str
    status: str = "Ready"
    message: str = ""
    since: str | None = None
    last_success: str | None = None
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "status": self.status,
            "message": self.message,
            "since": self.since,
            "lastSuccess": self.last_success,
            "failures": self.failures,
        }


class UpdateView(Value):
    """How the agent's self-update fares (the view's `agent.updateStatus`, the status
    document's `guestAgentStatus.updateStatus`): the version the goal state's agent
    family resolves to, `status` `Success` (running it), `Transitioning` (getting it, or
    restarting into it) or `Error` (it cannot be had or run: `message` says why), and a
    `code` (0, or the package error's: 1001, 1004, 1005...)."""

    expected_version: str
    status: str
    code: int = 0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "expectedVersion": self.expected_version,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }


class AgentView(Value):
    """The agent itself (the view's `agent` key, shown by a runtime run as a service):
    the version running, and its self-update's state when self-update is on."""

    version: str
    update: UpdateView | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": self.version}
        if self.update is not None:
            data["updateStatus"] = self.update.to_json()
        return data


class InstanceView(Value):
    """Every (not uninstalled) extension's state after a goal state was processed, and,
    for a long-running runtime, the health of its goal-state source (`source`) and the
    agent's own version and self-update (`agent`)."""

    goal_state_id: str | None
    extensions: tuple[ExtensionView, ...]
    source: SourceView | None = None
    agent: AgentView | None = None

    def failed(self) -> tuple[str, ...]:
        """The names of the extensions whose status is an error."""
        return tuple(e.name for e in self.extensions if any(s.level == "Error" for s in e.statuses))

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape, docs/instance-view.md#shape (`time` is null when unknown)."""
        return {
            "goalStateId": self.goal_state_id,
            "extensions": [
                {
                    "name": ext.name,
                    "type": ext.type,
                    "typeHandlerVersion": ext.type_handler_version,
                    "handlerState": ext.handler_state,
                    "sequenceNumber": ext.sequence_number,
                    "statuses": [
                        {
                            "code": st.code,
                            "level": st.level,
                            "displayStatus": st.display_status,
                            "message": st.message,
                            "time": st.time,
                        }
                        for st in ext.statuses
                    ],
                    "substatuses": [
                        {
                            "code": sub.code,
                            "level": sub.level,
                            "displayStatus": sub.display_status,
                            "message": sub.message,
                        }
                        for sub in ext.substatuses
                    ],
                }
                for ext in self.extensions
            ],
            **({"source": self.source.to_json()} if self.source is not None else {}),
            **({"agent": self.agent.to_json()} if self.agent is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceView:
        """Read back what `to_json` produced (e.g. the file a runtime wrote).

        Raises InstanceViewError listing every problem as `path: reason`.
        """
        reader = _Reader()
        view = reader.view(data)
        if reader.problems:
            raise InstanceViewError("\n".join(reader.problems))
        return view

    def extension(self, name: str) -> ExtensionView | None:
        """The extension called `name` (exact match first, then case-insensitive)."""
        for ext in self.extensions:
            if ext.name == name:
                return ext
        folded = name.casefold()
        return next((ext for ext in self.extensions if ext.name.casefold() == folded), None)


def read_instance_view(state_dir: Path) -> InstanceView | None:
    """The instance view the last runtime wrote in `state_dir` (no lock needed)."""
    data = read_instance_view_data(state_dir)
    return None if data is None else parse_instance_view(data)


def read_instance_view_data(state_dir: Path) -> bytes | None:
    """The bytes of the view file the last runtime wrote in `state_dir`, unparsed; None
    when there is none, or it cannot be read."""
    path = Path(state_dir) / ".exthandler" / "instance-view.json"
    try:
        return read_regular(path, OWN_FILE_LIMIT)
    except OSError:
        return None


def parse_instance_view(data: bytes) -> InstanceView | None:
    """The instance view a view file holds; None when it is not one."""
    try:
        return InstanceView.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError):
        return None


class _Reader:
    """Collects `path: reason` problems while reading an instance view document."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _field(self, data: Mapping[str, Any], key: str, path: str, kind: type, default: Any) -> Any:
        """`data[key]` when it is a `kind`, else `default` (null only when default is None)."""
        if key not in data:
            self.problems.append(f"{path}.{key}: missing")
            return default
        value = data[key]
        if value is None and default is None:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            self.problems.append(f"{path}.{key}: not {_KIND_NAMES[kind]}")
            return default
        return value

    def _text(self, data: Mapping[str, Any], key: str, path: str) -> Any:
        return self._field(data, key, path, str, "")

    def _items(self, data: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        for index, item in enumerate(self._field(data, key, path, list, [])):
            where = f"{path}.{key}[{index}]"
            if isinstance(item, Mapping):
                items.append((where, item))
            else:
                self.problems.append(f"{where}: not an object")
        return items

    def view(self, data: object) -> InstanceView:
        if not isinstance(data, Mapping):
            self.problems.append("$: not an object")
            return InstanceView(goal_state_id=None, extensions=())
        return InstanceView(
            goal_state_id=self._field(data, "goalStateId", "$", str, None),
            extensions=tuple(self.extension(p, e) for p, e in self._items(data, "extensions", "$")),
            source=self.source(data.get("source")),
            agent=self.agent(data.get("agent")),
        )

    def agent(self, data: object) -> AgentView | None:
        """The optional `agent` key; an unreadable one is left out, like `source`."""
        if not isinstance(data, Mapping) or not isinstance(data.get("version"), str):
            return None
        update = data.get("updateStatus")
        found = None
        if isinstance(update, Mapping):
            expected, status = update.get("expectedVersion"), update.get("status")
            code, message = update.get("code"), update.get("message")
            if isinstance(expected, str) and isinstance(status, str):
                found = UpdateView(
                    expected_version=expected,
                    status=status,
                    code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
                    message=message if isinstance(message, str) else "",
                )
        return AgentView(version=data["version"], update=found)

    def source(self, data: object) -> SourceView | None:
        """The optional `source` key; an unreadable one is left out, not an error (it is
        the runtime's own report, not part of the extensions' view)."""
        if not isinstance(data, Mapping):
            return None
        failures = data.get("failures")
        texts = {k: data.get(k) for k in ("location", "status", "message", "since", "lastSuccess")}
        if not isinstance(texts["location"], str) or not isinstance(texts["status"], str):
            return None
        return SourceView(
            location=texts["location"],
            status=texts["status"],
            message=texts["message"] if isinstance(texts["message"], str) else "",
            since=texts["since"] if isinstance(texts["since"], str) else None,
            last_success=texts["lastSuccess"] if isinstance(texts["lastSuccess"], str) else None,
            failures=failures
            if isinstance(failures, int) and not isinstance(failures, bool)
            else 0,
        )

    def extension(self, path: str, data: Mapping[str, Any]) -> ExtensionView:
        return ExtensionView(
            name=self._text(data, "name", path),
            type=self._text(data, "type", path),
            type_handler_version=self._text(data, "typeHandlerVersion", path),
            handler_state=self._text(data, "handlerState", path),
            sequence_number=self._field(data, "sequenceNumber", path, int, None),
            statuses=tuple(self.status(p, s) for p, s in self._items(data, "statuses", path)),
            substatuses=tuple(
                self.substatus(p, s) for p, s in self._items(data, "substatuses", path)
            ),
        )

    def status(self, path: str, data: Mapping[str, Any]) -> StatusView:
        return StatusView(
            code=self._text(data, "code", path),
            level=self._text(data, "level", path),
            display_status=self._text(data, "displayStatus", path),
            message=self._text(data, "message", path),
            time=self._field(data, "time", path, str, None) if "time" in data else None,
        )

    def substatus(self, path: str, data: Mapping[str, Any]) -> SubstatusView:
        return SubstatusView(
            code=self._text(data, "code", path),
            level=self._text(data, "level", path),
            display_status=self._text(data, "displayStatus", path),
            message=self._text(data, "message", path),
        )


_EXCERPT_START = re.compile(r"(?:^|(?<=[ \n]))\[stdout\]\n")
_STDERR_START = "\n\n[stderr]\n"


class MessagePart(Value):
    """A piece of a status message: `text`, or a command's `stdout` or `stderr` tail."""

    kind: str
    text: str


def split_message(message: str) -> list[MessagePart]:
    """A status message cut into its text and its output excerpts.

    Excerpts are the reference agent's `[stdout]\\n...\\n\\n[stderr]\\n...` sections,
    after a space (a failed command's description) or a line of their own (a handler's own
    message); a message may hold several, one per report or command.
    """
    parts: list[MessagePart] = []
    rest = message
    while rest:
        start = _EXCERPT_START.search(rest)
        split = rest.find(_STDERR_START, start.end()) if start else -1
        if start is None or split < 0:
            parts.append(MessagePart(kind="text", text=rest))
            break
        parts.append(MessagePart(kind="text", text=rest[: start.start()].rstrip(" ")))
        parts.append(MessagePart(kind="stdout", text=rest[start.end() : split]))
        rest = rest[split + len(_STDERR_START) :]
        after = _EXCERPT_START.search(rest)
        # The stderr tail runs to the line that starts the next excerpt, if any.
        cut = len(rest) if after is None else rest.rfind("\n", 0, after.start()) + 1
        parts.append(MessagePart(kind="stderr", text=rest[:cut].removesuffix("\n")))
        rest = rest[cut:]
    return [part for part in parts if part.text.strip()]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def message_headline(message: str, *, with_output: bool = False) -> str:
    """The one line of a status message that says the most about it.

    The first line of its text; a line that only introduces what follows ("invalid
    settings:") is joined to the next one. With `with_output` (for a failure), the last
    line of the command's stderr (else of its stdout) is added: the end of a failing
    command's output is where the error usually is.
    """
    parts = split_message(message)
    texts = [line for part in parts if part.kind == "text" for line in _lines(part.text)]
    headline = texts[0] if texts else ""
    if headline.endswith(":") and len(texts) > 1:
        headline = f"{headline} {texts[1]}"
    if with_output:
        outputs = {part.kind: _lines(part.text) for part in reversed(parts) if part.kind != "text"}
        kind = "stderr" if outputs.get("stderr") else "stdout"
        if outputs.get(kind):
            last = outputs[kind][-1]
            if not headline:
                headline = f"{kind}: {last}"
            elif headline.endswith(":"):
                headline = f"{headline} {last}"
            else:
                headline = f"{headline}; {kind}: {last}"
    return headline


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _status_word(statuses: Sequence[StatusView]) -> str:
    """`succeeded`, `failed/1009`, `transitioning`, ... (the code without its prefix)."""
    if not statuses:
        return "-"
    return statuses[0].code.removeprefix("ProvisioningState/")


def render_table(view: InstanceView, *, width: int | None = None) -> str:
    """The `exthandler status` table: one row per extension, columns aligned.

    MESSAGE is `message_headline` of the first status's message (with the output's last
    line for an error). Without `width` it is cut to 60 characters; with it (a terminal's
    width) the other columns keep theirs and MESSAGE gets the rest of the line, at least
    `MESSAGE_MIN_WIDTH` characters.
    """
    header = ("NAME", "TYPE", "VERSION", "STATE", "STATUS", "MESSAGE")
    rows: list[tuple[str, ...]] = []
    for ext in view.extensions:
        first = ext.statuses[0] if ext.statuses else None
        message = (
            message_headline(first.message, with_output=first.level == "Error") if first else ""
        )
        rows.append(
            (
                ext.name,
                ext.type,
                ext.type_handler_version,
                ext.handler_state,
                _status_word(ext.statuses),
                message,
            )
        )
    limit = MESSAGE_COLUMN_WIDTH
    if width is not None:
        others = sum(max(len(row[i]) for row in [header, *rows]) + 2 for i in range(5))
        limit = max(MESSAGE_MIN_WIDTH, width - others)
    return align_columns([header, *((*row[:5], _cut(row[5], limit)) for row in rows)])


def _indented(text: str, indent: str) -> list[str]:
    return [indent + line.rstrip() if line.strip() else "" for line in text.splitlines()]


def _message_lines(message: str) -> list[str]:
    """A message, indented, with its output sections only where they are not empty."""
    lines: list[str] = []
    for part in split_message(message):
        if part.kind == "text":
            lines += _indented(part.text.strip("\n"), "  ")
        else:
            lines += [f"  [{part.kind}]", *_indented(part.text.strip("\n"), "    ")]
    return lines


def render_extension(ext: ExtensionView) -> str:
    """`exthandler status NAME`: one extension, with its whole messages and substatuses."""
    facts = [
        ("name", ext.name),
        ("type", ext.type),
        ("version", ext.type_handler_version),
        ("state", ext.handler_state),
        ("sequence", "-" if ext.sequence_number is None else str(ext.sequence_number)),
    ]
    lines = align_columns(facts).splitlines()
    for status in ext.statuses:
        when = f", {status.time}" if status.time else ""
        word = status.code.removeprefix("ProvisioningState/")
        lines.append(f"status    {word} ({status.level}{when})")
        lines += _message_lines(status.message)
    for sub in ext.substatuses:
        _, _, rest = sub.code.partition("ComponentStatus/")
        name, _, word = rest.rpartition("/")
        title = f"{name}: {word}" if rest and name else sub.code
        lines.append(f"substatus {title} ({sub.level})")
        lines += _message_lines(sub.message)
    return "\n".join(lines)


def align_columns(rows: Sequence[Sequence[str]]) -> str:
    """`rows` as lines of left-aligned columns, two spaces apart, with no trailing blanks.

    Every column is as wide as its widest cell; the `exthandler` tables all look this way.
    """
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
