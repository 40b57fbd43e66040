"""The aggregate status document (PROTOCOL.md section 10, the "status blob"), built from
the instance view.

`build_document` is pure: the view, what is known of the goal state, the agent's own
status and the machine's names in, one JSON-ready dict out. Everything time-dependent is
given, so the same inputs give the same document; `content_digest` tells two documents
apart without their times, so that an unchanged status (read again, say, from a status
file that names no time) is not uploaded again before its heartbeat is due.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .._model import ExtensionGoal, GoalState, RequestedState
from .._report.view import ExtensionView, InstanceView, StatusView, SubstatusView
from .._values import Value

__all__ = [
    "DOCUMENT_VERSION",
    "SUPPORTED_FEATURES",
    "AgentStatus",
    "GoalOutcome",
    "OsInfo",
    "agent_status",
    "build_document",
    "content_digest",
    "encode",
    "os_info",
]

DOCUMENT_VERSION = "1.1"
SUPPORTED_FEATURES: tuple[tuple[str, str], ...] = (("MultipleExtensionsPerHandler", "1.0"),)
"""The features the document announces (`supportedFeatures`), as (Key, Value)."""

_HEARTBEAT_STATES = {"Ready": "Ready", "NotReady": "NotReady", "Unresponsive": "Unresponsive"}
_OS_RELEASE_LIMIT = 64 * 1024


def _message(text: str) -> dict[str, str]:
    return {"lang": "en-US", "message": text}


class OsInfo(Value):
    """`guestOSInfo`: the machine's name and operating system."""

    computer_name: str
    os_name: str
    os_version: str


def os_info(os_release: str = "/etc/os-release") -> OsInfo:
    """This machine's `OsInfo`: the host name, and the distribution's `ID` and
    `VERSION_ID` from os-release (else the kernel's name and release)."""
    fields: dict[str, str] = {}
    try:
        with open(os_release, encoding="utf-8", errors="replace") as stream:
            text = stream.read(_OS_RELEASE_LIMIT)
    except OSError:
        text = ""
    for line in text.splitlines():
        match = re.match(r"\A([A-Z_]+)=(.*)\Z", line.strip())
        if match:
            fields[match[1]] = match[2].strip().strip("\"'")
    machine = os.uname()  # what `platform` answers, without importing it
    return OsInfo(
        computer_name=machine.nodename,
        os_name=fields.get("ID") or machine.sysname,
        os_version=fields.get("VERSION_ID") or machine.release,
    )


class AgentStatus(Value):
    """`guestAgentStatus`: `Ready` or `NotReady`, and why."""

    ready: bool
    message: str


class GoalOutcome(Value):
    """What became of the last goal state the runtime finished with:
    `vmArtifactsAggregateStatus`. `ok` is True when its pass ran to its end (whatever the
    extensions' outcomes) and False when it was refused (`message` says why); `time` is
    when that was known."""

    goal_id: str
    in_svd_seq_no: str
    ok: bool
    time: str
    message: str = ""

    @classmethod
    def of(cls, goal: GoalState, *, ok: bool, time: str, message: str = "") -> GoalOutcome:
        """The outcome of `goal`, reported under its `inSvdSeqNo`, else its incarnation,
        else its id."""
        if goal.in_svd_seq_no is not None:
            number = goal.in_svd_seq_no
        elif goal.incarnation is not None:
            number = str(goal.incarnation)
        else:
            number = goal.id
        return cls(goal_id=goal.id, in_svd_seq_no=number, ok=ok, time=time, message=message)


def agent_status(view: InstanceView, outcome: GoalOutcome | None) -> AgentStatus:
    """Ready while the goal-state source answers with usable goal states; NotReady, with
    the reason, when it is unreachable or holds a goal state that cannot be used."""
    source = getattr(view, "source", None)
    status = getattr(source, "status", "Ready")
    if source is not None and status != "Ready":
        since = getattr(source, "since", None)
        reason = getattr(source, "message", "")
        what = {
            "Unreachable": "goal-state source unreachable",
            "Invalid": "goal-state source holds a goal state that cannot be used",
        }.get(status, f"goal-state source {status}")
        return AgentStatus(
            ready=False,
            message=what + (f" since {since}" if since else "") + (f": {reason}" if reason else ""),
        )
    if outcome is not None and not outcome.ok:
        return AgentStatus(
            ready=False, message=f"goal state {outcome.goal_id} was refused: {outcome.message}"
        )
    if outcome is None:
        return AgentStatus(ready=True, message="running")
    return AgentStatus(ready=True, message=f"running; goal state {outcome.goal_id} processed")


# -- one extension -------------------------------------------------------------------------


def _status_word(status: StatusView) -> str:
    if status.level == "Error":
        return "error"
    if status.level == "Warning":
        return "warning"
    if status.code.endswith("/transitioning"):
        return "transitioning"
    return "success"


def _status_code(code: str) -> int:
    last = code.rpartition("/")[2]
    return int(last) if last.isdigit() else 0


def _is_heartbeat(sub: SubstatusView) -> bool:
    return sub.code.startswith("ComponentStatus/Heartbeat/") and sub.display_status in {
        *_HEARTBEAT_STATES,
        "Unknown",
    }


def _substatus(sub: SubstatusView) -> dict[str, Any]:
    name = sub.code.partition("/")[2].rpartition("/")[0]
    word = sub.code.rpartition("/")[2]
    if word == "failed":
        status = "error"
    elif word == "transitioning":
        status = "transitioning"
    else:
        status = "warning" if sub.level == "Warning" else "success"
    return {"name": name, "status": status, "code": 0, "formattedMessage": _message(sub.message)}


def _operation(goal: ExtensionGoal | None, ext: ExtensionView) -> str:
    if goal is not None and goal.state is RequestedState.DISABLED:
        return "Disable"
    if goal is None and ext.handler_state == "Installed":
        return "Disable"
    return "Enable"


def _handler_status(
    ext: ExtensionView, goal: ExtensionGoal | None, heartbeat: SubstatusView | None
) -> tuple[str, int, str]:
    """The handler's `status`, `code` and message, as the reference agent reports them."""
    status = ext.statuses[0] if ext.statuses else None
    if status is not None and status.level == "Error":
        return "NotReady", _status_code(status.code), status.message
    if heartbeat is not None:
        return _HEARTBEAT_STATES.get(heartbeat.display_status, "NotReady"), 0, heartbeat.message
    state = ext.handler_state
    if state == "Enabled":
        return "Ready", 0, "Plugin enabled"
    if state == "Installed":
        disabled = goal is not None and goal.state is RequestedState.DISABLED
        return "NotReady", 0, "Plugin disabled" if disabled else "Plugin installed"
    if state == "FailedUpgrade":
        return "NotReady", 0, "Plugin upgrade failed"
    if status is not None and status.code.endswith("/transitioning"):
        return "Installing", 0, "Plugin is being installed"
    return "NotReady", 0, "Plugin not installed"


def _handler_entry(
    ext: ExtensionView, goal: ExtensionGoal | None, multi: bool, now: str
) -> dict[str, Any]:
    subs = [sub for sub in ext.substatuses if not _is_heartbeat(sub)]
    beats = [sub for sub in ext.substatuses if _is_heartbeat(sub)]
    handler_status, code, message = _handler_status(ext, goal, beats[-1] if beats else None)
    entry: dict[str, Any] = {
        "handlerName": ext.type,
        "handlerVersion": ext.type_handler_version,
        "status": handler_status,
        "code": code,
        "useExactVersion": True if goal is None else goal.use_exact_version,
        "formattedMessage": _message(message),
    }
    status = ext.statuses[0] if ext.statuses else None
    if status is None or ext.sequence_number is None:
        return entry
    time = status.time or now
    inner: dict[str, Any] = {
        "name": ext.name,
        "operation": _operation(goal, ext),
        "status": _status_word(status),
        "code": _status_code(status.code),
        "configurationAppliedTime": time,
        "formattedMessage": _message(status.message),
    }
    if subs:
        inner["substatus"] = [_substatus(sub) for sub in subs]
    settings: dict[str, Any] = {"sequenceNumber": ext.sequence_number}
    if multi:
        settings["extensionName"] = ext.name
    settings["settingsStatus"] = {"version": 1.0, "timestampUTC": time, "status": inner}
    entry["runtimeSettingsStatus"] = settings
    return entry


# -- the document ----------------------------------------------------------------------------


def build_document(
    view: InstanceView,
    *,
    goal: GoalState | None,
    outcome: GoalOutcome | None,
    agent: AgentStatus,
    agent_version: str,
    os: OsInfo,
    now: str,
    is_multi: Callable[[ExtensionView, ExtensionGoal | None], bool] | None = None,
) -> dict[str, Any]:
    """The aggregate status document for `view`.

    `goal` (the goal state being or last applied) supplies what the view does not hold:
    each extension's requested state and `useExactVersion`; `outcome` is the
    `vmArtifactsAggregateStatus` (left out while no goal state was finished with).
    `is_multi` says whether an extension's handler is multi-config (its entry then names
    the extension); by default the goal state's `isMultiConfig` says. `now` is the upload
    time.
    """
    goals: Mapping[str, ExtensionGoal] = {}
    if goal is not None:
        goals = {e.name.lower(): e for e in goal.extensions}
    handlers = []
    for ext in view.extensions:
        ext_goal = goals.get(ext.name.lower())
        if is_multi is not None:
            multi = is_multi(ext, ext_goal)
        else:
            multi = ext_goal is not None and bool(ext_goal.multi_config)
        handlers.append(_handler_entry(ext, ext_goal, multi, now))
    guest: dict[str, Any] = {
        "version": agent_version,
        "status": "Ready" if agent.ready else "NotReady",
        "formattedMessage": _message(agent.message),
    }
    update = view.agent.update if view.agent is not None else None
    if update is not None:  # the agent's self-update (docs/operating.md)
        guest["updateStatus"] = {
            "expectedVersion": update.expected_version,
            "status": update.status,
            "code": update.code,
            "formattedMessage": _message(update.message),
        }
    aggregate: dict[str, Any] = {"guestAgentStatus": guest, "handlerAggregateStatus": handlers}
    if outcome is not None:
        aggregate["vmArtifactsAggregateStatus"] = {
            "goalStateAggregateStatus": {
                "inSvdSeqNo": outcome.in_svd_seq_no,
                "status": "Success" if outcome.ok else "Failed",
                "code": 0 if outcome.ok else 1,
                "timestampUTC": outcome.time,
                "formattedMessage": _message(
                    "GoalState executed successfully" if outcome.ok else outcome.message
                ),
            }
        }
    return {
        "version": DOCUMENT_VERSION,
        "timestampUTC": now,
        "aggregateStatus": aggregate,
        "guestOSInfo": {
            "computerName": os.computer_name,
            "osName": os.os_name,
            "osVersion": os.os_version,
            "version": agent_version,
        },
        "supportedFeatures": [{"Key": key, "Value": value} for key, value in SUPPORTED_FEATURES],
    }


def encode(document: Mapping[str, Any]) -> bytes:
    """The bytes uploaded: compact JSON, UTF-8."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


_TIMES = frozenset({"timestampUTC", "configurationAppliedTime"})


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [_timeless(item) for item in value]
    return value


def content_digest(document: Mapping[str, Any]) -> str:
    """A digest of `document` without its times (`timestampUTC`,
    `configurationAppliedTime`): equal for the same status, however often it was read."""
    return hashlib.sha256(encode(_timeless(dict(document)))).hexdigest()
