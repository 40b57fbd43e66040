"""The instance view: its exact JSON, the status mapping and the composition rule."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from exthandler_sdk import Operation, StatusLevel
from exthandler_sdk.protocol import StatusReport, format_excerpt, parse_status
from exthandler_sdk.protocol import Substatus as SubStatus
from hypothesis import given
from hypothesis import strategies as st

from exthandler._report.view import (
    CommandFailure,
    ExtensionView,
    InstanceView,
    InstanceViewError,
    StatusView,
    SubstatusView,
    compose_status,
    error_view,
    message_headline,
    render_extension,
    render_table,
    split_message,
    status_view,
    substatus_view,
)

NOW = "2026-11-25T12:05:00Z"
WRITTEN = "2026-11-25T12:00:00Z"
EXCERPT = "[stdout]\nhello\n\n[stderr]\nboom"


def report(
    status: StatusLevel,
    *,
    code: int = 0,
    message: str = "",
    substatus: tuple[SubStatus, ...] = (),
    timestamp: str | None = WRITTEN,
) -> StatusReport:
    return StatusReport(
        name="customScript",
        operation="Enable",
        status=status,
        code=code,
        message=message,
        substatus=substatus,
        timestamp=timestamp,
        configuration_applied_time=None,
    )


FAILURE = CommandFailure(
    operation=Operation.ENABLE, code=1009, description="Enable failed: exit code 3", excerpt=EXCERPT
)
STDOUT = SubStatus(name="StdOut", status=StatusLevel.SUCCESS, code=0, message="hello")


@pytest.mark.parametrize(
    ("level", "code", "expected"),
    [
        (StatusLevel.SUCCESS, 0, ("ProvisioningState/succeeded", "Info", "Provisioning succeeded")),
        (
            StatusLevel.WARNING,
            4,
            ("ProvisioningState/succeeded", "Warning", "Provisioning succeeded"),
        ),
        (StatusLevel.ERROR, 53, ("ProvisioningState/failed/53", "Error", "Provisioning failed")),
        (
            StatusLevel.TRANSITIONING,
            0,
            ("ProvisioningState/transitioning", "Info", "Transitioning"),
        ),
    ],
)
def test_status_mapping(level: StatusLevel, code: int, expected: tuple[str, str, str]) -> None:
    view = status_view(level, code, "m", NOW)
    assert (view.code, view.level, view.display_status) == expected
    assert (view.message, view.time) == ("m", NOW)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (
            StatusLevel.SUCCESS,
            ("ComponentStatus/StdOut/succeeded", "Info", "Provisioning succeeded"),
        ),
        (
            StatusLevel.WARNING,
            ("ComponentStatus/StdOut/succeeded", "Warning", "Provisioning succeeded"),
        ),
        (StatusLevel.ERROR, ("ComponentStatus/StdOut/failed", "Error", "Provisioning failed")),
        (
            StatusLevel.TRANSITIONING,
            ("ComponentStatus/StdOut/transitioning", "Info", "Transitioning"),
        ),
    ],
)
def test_substatus_mapping(level: StatusLevel, expected: tuple[str, str, str]) -> None:
    view = substatus_view(SubStatus(name="StdOut", status=level, code=9, message="out"))
    assert (view.code, view.level, view.display_status, view.message) == (*expected, "out")


def test_error_view() -> None:
    assert error_view(1004, "download failed", NOW) == StatusView(
        code="ProvisioningState/failed/1004",
        level="Error",
        display_status="Provisioning failed",
        message="download failed",
        time=NOW,
    )


# -- composition --------------------------------------------------------------------------


@pytest.mark.parametrize("level", [StatusLevel.SUCCESS, StatusLevel.WARNING, StatusLevel.ERROR])
def test_terminal_report_is_authoritative(level: StatusLevel) -> None:
    shown = compose_status(
        report(level, code=7, message="mine", substatus=(STDOUT,)),
        None,
        ran_ok=True,
        operation=Operation.ENABLE,
        now=NOW,
    )
    status, subs = shown.status, shown.substatuses
    assert status == status_view(level, 7, "mine", WRITTEN)
    assert subs == (substatus_view(STDOUT),)
    assert shown.level is level


def test_report_without_timestamp_uses_now() -> None:
    shown = compose_status(
        report(StatusLevel.SUCCESS, timestamp=None),
        None,
        ran_ok=True,
        operation=Operation.ENABLE,
        now=NOW,
    )
    status, _subs = shown.status, shown.substatuses
    assert status.time == NOW


def test_failure_without_report() -> None:
    shown = compose_status(None, FAILURE, ran_ok=False, operation=Operation.ENABLE, now=NOW)
    status, subs = shown.status, shown.substatuses
    assert status == StatusView(
        code="ProvisioningState/failed/1009",
        level="Error",
        display_status="Provisioning failed",
        message="Enable failed: exit code 3 [stdout]\nhello\n\n[stderr]\nboom",
        time=NOW,
    )
    assert subs == ()


def test_failure_with_transitioning_report() -> None:
    timeout = CommandFailure(
        operation=Operation.INSTALL,
        code=1011,
        description="Install timed out after 900 s",
        excerpt="",
    )
    shown = compose_status(
        report(StatusLevel.TRANSITIONING, message="working", substatus=(STDOUT,)),
        timeout,
        ran_ok=False,
        operation=Operation.INSTALL,
        now=NOW,
    )
    status, subs = shown.status, shown.substatuses
    assert status == status_view(StatusLevel.ERROR, 1011, "Install timed out after 900 s", NOW)
    assert subs == (substatus_view(STDOUT),)


@pytest.mark.parametrize(
    ("own_message", "expected"),
    [
        ("script said no", "script said no\nEnable failed: exit code 3 " + EXCERPT),
        ("", "Enable failed: exit code 3 " + EXCERPT),
    ],
)
def test_both_report_and_failure(own_message: str, expected: str) -> None:
    shown = compose_status(
        report(StatusLevel.ERROR, code=53, message=own_message),
        FAILURE,
        ran_ok=False,
        operation=Operation.ENABLE,
        now=NOW,
    )
    status, _subs = shown.status, shown.substatuses
    assert status.code == "ProvisioningState/failed/53"  # the extension's code wins
    assert status.message == expected


def test_a_failing_command_is_an_error_even_after_a_success_report() -> None:
    """The extension said success but its command failed: the failure's code shows."""
    shown = compose_status(
        report(StatusLevel.SUCCESS, message="ok"),
        FAILURE,
        ran_ok=False,
        operation=Operation.ENABLE,
        now=NOW,
    )
    status, _subs = shown.status, shown.substatuses
    assert (status.code, status.level) == ("ProvisioningState/failed/1009", "Error")
    assert status.message.startswith("ok\nEnable failed: exit code 3")


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (Operation.ENABLE, "Enable succeeded; the extension wrote no status file"),
        (Operation.DISABLE, "Disable succeeded; the extension wrote no status file"),
        (None, "The command succeeded; the extension wrote no status file"),
    ],
)
def test_success_without_report(operation: Operation | None, message: str) -> None:
    shown = compose_status(None, None, ran_ok=True, operation=operation, now=NOW)
    status, subs = shown.status, shown.substatuses
    assert status == status_view(StatusLevel.SUCCESS, 0, message, NOW)
    assert subs == ()


@pytest.mark.parametrize("ran_ok", [True, False])
def test_transitioning_report_without_failure(ran_ok: bool) -> None:
    shown = compose_status(
        report(StatusLevel.TRANSITIONING, message="half way", substatus=(STDOUT,)),
        None,
        ran_ok=ran_ok,
        operation=Operation.ENABLE,
        now=NOW,
    )
    status, subs = shown.status, shown.substatuses
    assert status == status_view(StatusLevel.TRANSITIONING, 0, "half way", NOW)
    assert subs == (substatus_view(STDOUT),)


def test_nothing_known_is_transitioning() -> None:
    shown = compose_status(None, None, ran_ok=False, operation=None, now=NOW)
    status, subs = shown.status, shown.substatuses
    assert status == status_view(StatusLevel.TRANSITIONING, 0, "", NOW)
    assert subs == ()


def test_invalid_status_file_is_error_1012() -> None:
    invalid = parse_status(b"not json")
    shown = compose_status(invalid, None, ran_ok=True, operation=Operation.ENABLE, now=NOW)
    status, _subs = shown.status, shown.substatuses
    assert status.code == "ProvisioningState/failed/1012"
    assert status.level == "Error"
    assert status.message.startswith("status file: not valid JSON")
    assert status.time == NOW
    with_failure = compose_status(
        invalid, FAILURE, ran_ok=False, operation=Operation.ENABLE, now=NOW
    ).status
    assert with_failure.code == "ProvisioningState/failed/1012"
    assert with_failure.message.endswith(EXCERPT)


def test_command_failure_text() -> None:
    assert FAILURE.text == "Enable failed: exit code 3 " + EXCERPT
    bare = CommandFailure(operation=Operation.ENABLE, code=1009, description="d", excerpt="")
    assert bare.text == "d"


# -- the JSON -----------------------------------------------------------------------------


def sample_view() -> InstanceView:
    return InstanceView(
        goal_state_id="gs-1",
        extensions=(
            ExtensionView(
                name="customScript",
                type="Microsoft.Azure.Extensions.CustomScript",
                type_handler_version="2.1.3",
                handler_state="Enabled",
                sequence_number=0,
                statuses=(error_view(1009, "Enable failed: exit code 3 " + EXCERPT, NOW),),
                substatuses=(substatus_view(STDOUT),),
            ),
            ExtensionView(
                name="other",
                type="P.T",
                type_handler_version="1.0",
                handler_state="NotInstalled",
                sequence_number=None,
                statuses=(
                    StatusView(
                        code="ProvisioningState/transitioning",
                        level="Info",
                        display_status="Transitioning",
                        message="",
                    ),
                ),
                substatuses=(),
            ),
        ),
    )


def test_to_json_exact_shape() -> None:
    assert sample_view().to_json() == {
        "goalStateId": "gs-1",
        "extensions": [
            {
                "name": "customScript",
                "type": "Microsoft.Azure.Extensions.CustomScript",
                "typeHandlerVersion": "2.1.3",
                "handlerState": "Enabled",
                "sequenceNumber": 0,
                "statuses": [
                    {
                        "code": "ProvisioningState/failed/1009",
                        "level": "Error",
                        "displayStatus": "Provisioning failed",
                        "message": "Enable failed: exit code 3 [stdout]\nhello\n\n[stderr]\nboom",
                        "time": NOW,
                    }
                ],
                "substatuses": [
                    {
                        "code": "ComponentStatus/StdOut/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                        "message": "hello",
                    }
                ],
            },
            {
                "name": "other",
                "type": "P.T",
                "typeHandlerVersion": "1.0",
                "handlerState": "NotInstalled",
                "sequenceNumber": None,
                "statuses": [
                    {
                        "code": "ProvisioningState/transitioning",
                        "level": "Info",
                        "displayStatus": "Transitioning",
                        "message": "",
                        "time": None,
                    }
                ],
                "substatuses": [],
            },
        ],
    }


def test_round_trip_through_text() -> None:
    view = sample_view()
    assert InstanceView.from_json(json.loads(json.dumps(view.to_json()))) == view
    empty = InstanceView(goal_state_id=None, extensions=())
    assert InstanceView.from_json(empty.to_json()) == empty


def test_from_json_tolerates_missing_time() -> None:
    data: dict[str, Any] = sample_view().to_json()
    del data["extensions"][0]["statuses"][0]["time"]
    view = InstanceView.from_json(data)
    assert view.extensions[0].statuses[0].time is None


@pytest.mark.parametrize(
    ("document", "problems"),
    [
        ([], ["$: not an object"]),
        ({}, ["$.goalStateId: missing", "$.extensions: missing"]),
        (
            {"goalStateId": 5, "extensions": {}},
            ["$.goalStateId: not a string", "$.extensions: not a list"],
        ),
        ({"goalStateId": None, "extensions": [1]}, ["$.extensions[0]: not an object"]),
        (
            {"goalStateId": "g", "extensions": [{"name": None, "sequenceNumber": True}]},
            [
                "$.extensions[0].name: not a string",
                "$.extensions[0].type: missing",
                "$.extensions[0].typeHandlerVersion: missing",
                "$.extensions[0].handlerState: missing",
                "$.extensions[0].sequenceNumber: not an integer",
                "$.extensions[0].statuses: missing",
                "$.extensions[0].substatuses: missing",
            ],
        ),
    ],
)
def test_from_json_problems(document: Any, problems: list[str]) -> None:
    with pytest.raises(InstanceViewError) as caught:
        InstanceView.from_json(document)
    assert str(caught.value).splitlines() == problems
    assert isinstance(caught.value, ValueError)


def test_from_json_nested_problems() -> None:
    data: dict[str, Any] = sample_view().to_json()
    data["extensions"][0]["statuses"][0]["level"] = 3
    data["extensions"][0]["statuses"][0]["time"] = 3
    data["extensions"][0]["substatuses"][0]["message"] = None
    with pytest.raises(InstanceViewError) as caught:
        InstanceView.from_json(data)
    assert str(caught.value).splitlines() == [
        "$.extensions[0].statuses[0].level: not a string",
        "$.extensions[0].statuses[0].time: not a string",
        "$.extensions[0].substatuses[0].message: not a string",
    ]


def test_extension_lookup() -> None:
    view = sample_view()
    assert view.extension("other") is view.extensions[1]
    assert view.extension("CUSTOMSCRIPT") is view.extensions[0]
    assert view.extension("missing") is None


texts = st.text(max_size=12)
status_views = st.builds(
    StatusView,
    code=texts,
    level=texts,
    display_status=texts,
    message=texts,
    time=st.none() | texts,
)
substatus_views = st.builds(
    SubstatusView, code=texts, level=texts, display_status=texts, message=texts
)
extension_views = st.builds(
    ExtensionView,
    name=texts,
    type=texts,
    type_handler_version=texts,
    handler_state=texts,
    sequence_number=st.none() | st.integers(),
    statuses=st.lists(status_views, max_size=2).map(tuple),
    substatuses=st.lists(substatus_views, max_size=2).map(tuple),
)
instance_views = st.builds(
    InstanceView,
    goal_state_id=st.none() | texts,
    extensions=st.lists(extension_views, max_size=3).map(tuple),
)


@given(instance_views)
def test_round_trip_property(view: InstanceView) -> None:
    assert InstanceView.from_json(json.loads(json.dumps(view.to_json()))) == view


# -- the table ----------------------------------------------------------------------------


def test_render_table() -> None:
    long_message = "x" * 100 + "\nsecond line"
    view = InstanceView(
        goal_state_id="g",
        extensions=(
            *sample_view().extensions,
            ExtensionView(
                name="long",
                type="P.T",
                type_handler_version="1.0",
                handler_state="Enabled",
                sequence_number=1,
                statuses=(status_view(StatusLevel.SUCCESS, 0, long_message, NOW),),
                substatuses=(),
            ),
            ExtensionView(
                name="bare",
                type="P.T",
                type_handler_version="1.0",
                handler_state="Installed",
                sequence_number=None,
                statuses=(),
                substatuses=(),
            ),
        ),
    )
    lines = render_table(view).splitlines()
    assert [re.split(r"  +", line) for line in lines] == [
        ["NAME", "TYPE", "VERSION", "STATE", "STATUS", "MESSAGE"],
        [
            "customScript",
            "Microsoft.Azure.Extensions.CustomScript",
            "2.1.3",
            "Enabled",
            "failed/1009",
            "Enable failed: exit code 3; stderr: boom",
        ],
        ["other", "P.T", "1.0", "NotInstalled", "transitioning"],
        ["long", "P.T", "1.0", "Enabled", "succeeded", "x" * 57 + "..."],
        ["bare", "P.T", "1.0", "Installed", "-"],
    ]
    for header, cell in [("TYPE", "P.T"), ("STATE", "Enabled"), ("MESSAGE", "x")]:
        assert lines[0].index(header) == lines[3].index(cell)  # columns are aligned
    assert all(line == line.rstrip() for line in lines)


def test_render_empty_table() -> None:
    assert render_table(InstanceView(goal_state_id=None, extensions=())) == (
        "NAME  TYPE  VERSION  STATE  STATUS  MESSAGE"
    )


def test_message_column_boundary() -> None:
    def row_message(text: str) -> str:
        ext = ExtensionView(
            name="n",
            type="t",
            type_handler_version="1.0",
            handler_state="Enabled",
            sequence_number=0,
            statuses=(status_view(StatusLevel.SUCCESS, 0, text, NOW),),
            substatuses=(),
        )
        return render_table(InstanceView(goal_state_id=None, extensions=(ext,))).splitlines()[1]

    assert row_message("y" * 60).endswith("  " + "y" * 60)
    assert row_message("y" * 61).endswith("  " + "y" * 57 + "...")
    assert row_message("\n\n  first\nsecond").endswith("  first")


# -- the headline of a message ------------------------------------------------------------

FAILED_ENABLE = CommandFailure(
    operation=Operation.ENABLE,
    code=1009,
    description="Enable failed: exit code 3",
    excerpt=format_excerpt("step 1\nstep 2\n", "warning: slow\nfatal: no route to host\n"),
)


@pytest.mark.parametrize(
    ("message", "error", "headline"),
    [
        # A failed command: its description, then the last line of its stderr.
        (FAILED_ENABLE.text, True, "Enable failed: exit code 3; stderr: fatal: no route to host"),
        # The same message in a succeeded status: only the text.
        (FAILED_ENABLE.text, False, "Enable failed: exit code 3"),
        # No stderr: stdout's last line; no output at all: the description alone.
        (
            "Enable failed: exit code 1 " + format_excerpt("done 1\ndone 2\n\n", ""),
            True,
            "Enable failed: exit code 1; stdout: done 2",
        ),
        (
            "Enable failed: exit code 1 " + format_excerpt("", ""),
            True,
            "Enable failed: exit code 1",
        ),
        # The SDK's settings error: a header line, the problems below it.
        (
            "invalid settings:\n$.port: must be at most 65535\n$.host: missing",
            True,
            "invalid settings: $.port: must be at most 65535",
        ),
        # CustomScript's own report: the headline on a line of its own, then the excerpt.
        (
            "Enable failed: the script exited with code 2\n" + format_excerpt("", "bad flag\n"),
            True,
            "Enable failed: the script exited with code 2; stderr: bad flag",
        ),
        # A bare header whose cause is only in the output.
        ("Enable failed:\n" + format_excerpt("", "disk full\n"), True, "Enable failed: disk full"),
        # An extension's report followed by the failure of its command.
        (
            "could not reach the server\n" + FAILED_ENABLE.text,
            True,
            "could not reach the server; stderr: fatal: no route to host",
        ),
        ("\n\n  first\nsecond", False, "first"),
        ("", True, ""),
    ],
)
def test_message_headline(message: str, error: bool, headline: str) -> None:
    assert message_headline(message, with_output=error) == headline


def test_split_message_finds_every_excerpt() -> None:
    report = "Enable failed: the script exited with code 2\n" + format_excerpt("out\n", "")
    parts = split_message(report + "\n" + FAILED_ENABLE.text)
    assert [(p.kind, p.text.strip()) for p in parts] == [
        ("text", "Enable failed: the script exited with code 2"),
        ("stdout", "out"),  # the empty stderr is left out
        ("text", "Enable failed: exit code 3"),
        ("stdout", "step 1\nstep 2"),
        ("stderr", "warning: slow\nfatal: no route to host"),
    ]
    assert split_message("no excerpt [stdout] here") == [
        split_message("no excerpt [stdout] here")[0]
    ]
    assert [p.kind for p in split_message("[stdout]\nonly stdout, no stderr header")] == ["text"]


def test_render_table_fits_a_width() -> None:
    ext = ExtensionView(
        name="n",
        type="t",
        type_handler_version="1.0",
        handler_state="Enabled",
        sequence_number=0,
        statuses=(status_view(StatusLevel.SUCCESS, 0, "m" * 200, NOW),),
        substatuses=(),
    )
    view = InstanceView(goal_state_id=None, extensions=(ext,))
    for width, cell in [(150, 150 - 41), (60, 20), (300, 200)]:
        header, row = render_table(view, width=width).splitlines()
        shown = row[header.index("MESSAGE") :]
        assert len(shown) == cell
        assert shown.endswith("..." if cell < 200 else "m")


def test_render_extension_shows_substatuses() -> None:
    lines = render_extension(sample_view().extensions[0]).splitlines()
    assert lines[5:] == [
        f"status    failed/1009 (Error, {NOW})",
        "  Enable failed: exit code 3",
        "  [stdout]",
        "    hello",
        "  [stderr]",
        "    boom",
        "substatus StdOut: succeeded (Info)",
        "  hello",
    ]
