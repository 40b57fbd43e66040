# ruff: noqa: E501  (the fixtures keep the published formats' long lines)
"""The aggregate status document (PROTOCOL.md section 10) and the goal-state fields that
say where it goes: `StatusUploadBlob` and `InVMGoalStateMetaData@inSvdSeqNo` in
ExtensionsConfig XML, `statusUploadBlob` and `inSvdSeqNo` in vmSettings. The fixtures
follow the published formats of the reference agent and the HostGAPlugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exthandler import GoalStateError, parse_goal_state
from exthandler._model import StatusBlobType
from exthandler._report.view import ExtensionView, InstanceView, StatusView, SubstatusView
from exthandler._upload.document import (
    AgentStatus,
    GoalOutcome,
    OsInfo,
    agent_status,
    build_document,
    content_digest,
    os_info,
)

SIG = "hfRh7gzUE7sUtYwke78IOlZOrTRCYvkec4hGZ9zZzXo"
BLOB = (
    "https://test.blob.core.windows.net/vhds/test-cs12.test-cs12.test-cs12.status"
    f"?sr=b&amp;sp=rw&amp;se=9999-01-01&amp;sk=key1&amp;sv=2014-02-14&amp;sig={SIG}"
)

EXTENSIONS_CONFIG = f"""<?xml version="1.0" encoding="utf-8"?>
<Extensions version="1.0.0.0" goalStateIncarnation="9"><GuestAgentExtension xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <GAFamilies>
    <GAFamily>
      <Name>Prod</Name>
      <Uris>
        <Uri>http://mock-goal-state/manifest_of_ga.xml</Uri>
      </Uris>
    </GAFamily>
  </GAFamilies>
</GuestAgentExtension>
<Plugins>
  <Plugin name="OSTCExtensions.ExampleHandlerLinux" version="1.0.0" location="http://mock-goal-state/Microsoft.OSTCExtensions_ExampleHandlerLinux_asiaeast_manifest.xml" config="" state="enabled" autoUpgrade="false" failoverlocation="http://mock-goal-state/Microsoft.OSTCExtensions_ExampleHandlerLinux_asiaeast_manifest.xml" runAsStartupTask="false" isJson="true" />
</Plugins>
<PluginSettings>
  <Plugin name="OSTCExtensions.ExampleHandlerLinux" version="1.0.0">
    <RuntimeSettings seqNo="0">{{"runtimeSettings":[{{"handlerSettings":{{"publicSettings":{{"foo":"bar"}}}}}}]}}</RuntimeSettings>
  </Plugin>
</PluginSettings>
<InVMGoalStateMetaData inSvdSeqNo="3" createdOnTicks="637726657706205299" activityId="2dd8c2ca-2a4e-4a8b-9b2a-1b1e3d4f5a6b" correlationId="8a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d" />
<StatusUploadBlob statusBlobType="PageBlob">{BLOB}</StatusUploadBlob></Extensions>
"""

VM_SETTINGS: dict[str, Any] = {
    "hostGAPluginVersion": "1.0.8.133",
    "vmSettingsSchemaVersion": "0.0",
    "activityId": "a33f6f53-43d6-4625-b322-1a39651a00c9",
    "correlationId": "9a47a2a2-e740-4bfc-b11b-4f2f7cfe7d2e",
    "inSvdSeqNo": 1,
    "extensionsLastModifiedTickCount": 637726699999999999,
    "extensionGoalStatesSource": "FastTrack",
    "onHold": True,
    "statusUploadBlob": {
        "statusBlobType": "BlockBlob",
        "value": "https://dcrcl3a0xs.blob.core.windows.net/$system/edp0plkw2b.86f4ae0a.status"
        f"?sv=2018-03-28&sr=b&sk=system-1&sig={SIG}&se=9999-01-01T00%3a00%3a00Z&sp=w",
    },
    "inVMMetadata": {
        "subscriptionId": "8e037ad4-618f-4466-8bc8-5099d41ac15b",
        "resourceGroupName": "rg-dc-86fjzhp",
        "vmName": "edp0plkw2b",
        "location": "CentralUSEUAP",
        "vmId": "86f4ae0a-61f8-48ae-9199-40f402d56864",
        "vmSize": "Standard_B2s",
        "osType": "Linux",
    },
    "requiredFeatures": [{"name": "MultipleExtensionsPerHandler"}],
    "gaFamilies": [
        {
            "name": "Prod",
            "uris": [
                "https://zrdfepirv2cbn09pr02a.blob.core.windows.net/ga/Prod_uscentraleuap_manifest.xml"
            ],
        }
    ],
    "extensionGoalStates": [
        {
            "name": "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
            "version": "1.9.1",
            "location": "https://zrdfepirv2cbn04prdstr01a.blob.core.windows.net/a47f0806/Microsoft.Azure.Monitor_AzureMonitorLinuxAgent_manifest.xml",
            "state": "enabled",
            "autoUpgrade": True,
            "runAsStartupTask": False,
            "isJson": True,
            "useExactVersion": True,
            "settingsSeqNo": 0,
            "settings": [{"publicSettings": '{"GCS_AUTO_CONFIG":true}'}],
        },
        {
            "name": "Microsoft.CPlat.Core.RunCommandHandlerLinux",
            "version": "1.3.2",
            "state": "enabled",
            "isMultiConfig": True,
            "settings": [
                {
                    "publicSettings": "{}",
                    "seqNo": 0,
                    "extensionName": "MCExt1",
                    "extensionState": "enabled",
                },
                {
                    "publicSettings": "{}",
                    "seqNo": 2,
                    "extensionName": "MCExt2",
                    "extensionState": "disabled",
                },
            ],
        },
    ],
}


# -- where the document goes: the goal-state fields ---------------------------------------


def test_extensions_config_names_its_status_blob_and_sequence() -> None:
    goal = parse_goal_state(EXTENSIONS_CONFIG.encode())
    blob = goal.status_upload_blob
    assert blob is not None
    assert blob.blob_type is StatusBlobType.PAGE_BLOB
    assert blob.url == BLOB.replace("&amp;", "&")
    assert goal.in_svd_seq_no == "3"
    assert goal.incarnation == 9
    assert SIG not in repr(goal)


def test_vm_settings_names_its_status_blob_and_sequence() -> None:
    goal = parse_goal_state(json.dumps(VM_SETTINGS).encode())
    assert goal.status_upload_blob is not None
    assert goal.status_upload_blob.blob_type is StatusBlobType.BLOCK_BLOB
    assert goal.status_upload_blob.url == VM_SETTINGS["statusUploadBlob"]["value"]
    assert goal.in_svd_seq_no == "1"
    assert [e.name for e in goal.extensions] == [
        "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
        "MCExt1",
        "MCExt2",
    ]


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (
            '<StatusUploadBlob statusBlobType="blockblob"> https://h/c/b?sv=1&amp;sig=2 </StatusUploadBlob>',
            StatusBlobType.BLOCK_BLOB,
        ),
        (
            "<StatusUploadBlob>https://h/c/b?sv=1&amp;sig=2</StatusUploadBlob>",
            StatusBlobType.BLOCK_BLOB,
        ),
        ("<StatusUploadBlob statusBlobType='PageBlob'/>", None),
        ("", None),
    ],
)
def test_xml_blob_type_defaults_and_empty_blobs(blob: str, expected: StatusBlobType | None) -> None:
    goal = parse_goal_state(f"<Extensions><Plugins/>{blob}</Extensions>")
    if expected is None:
        assert goal.status_upload_blob is None
    else:
        assert goal.status_upload_blob is not None
        assert goal.status_upload_blob.blob_type is expected
        assert goal.status_upload_blob.url == "https://h/c/b?sv=1&sig=2"
    assert goal.in_svd_seq_no is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            f'<StatusUploadBlob statusBlobType="AppendBlob">https://h/b?sig={SIG}</StatusUploadBlob>',
            "Extensions/StatusUploadBlob@statusBlobType: 'AppendBlob' is not a blob type"
            " (BlockBlob, PageBlob)",
        ),
        (
            '<InVMGoalStateMetaData inSvdSeqNo="-1"/>',
            "Extensions/InVMGoalStateMetaData@inSvdSeqNo: '-1' is not a non-negative integer",
        ),
        (
            "<StatusUploadBlob>a</StatusUploadBlob><StatusUploadBlob>b</StatusUploadBlob>",
            "Extensions/StatusUploadBlob: appears 2 times, expected once",
        ),
    ],
)
def test_xml_status_fields_that_cannot_be_used(extra: str, problem: str) -> None:
    with pytest.raises(GoalStateError) as caught:
        parse_goal_state(f"<Extensions><Plugins/>{extra}</Extensions>")
    assert list(caught.value.problems) == [problem]
    assert SIG not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"statusUploadBlob": "https://h/b"},
            "$.statusUploadBlob: must be an object, not a string",
        ),
        (
            {"statusUploadBlob": {"statusBlobType": "Folder", "value": "https://h/b"}},
            "$.statusUploadBlob.statusBlobType: 'Folder' is not a blob type (BlockBlob, PageBlob)",
        ),
        (
            {"statusUploadBlob": {"value": 7}},
            "$.statusUploadBlob.value: must be a URL string, not a number",
        ),
        ({"inSvdSeqNo": "one"}, "$.inSvdSeqNo: 'one' is not a non-negative integer"),
    ],
)
def test_vm_settings_status_fields_that_cannot_be_used(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(GoalStateError) as caught:
        parse_goal_state(json.dumps({"extensionGoalStates": [], **fields}).encode())
    assert list(caught.value.problems) == [problem]


def test_vm_settings_without_a_blob_value_names_none() -> None:
    document = {"extensionGoalStates": [], "statusUploadBlob": {"statusBlobType": "BlockBlob"}}
    assert parse_goal_state(json.dumps(document).encode()).status_upload_blob is None


# -- the document ---------------------------------------------------------------------------

NOW = "2026-11-25T12:00:00Z"
OS = OsInfo(computer_name="web-01", os_name="ubuntu", os_version="24.04")


def status(
    code: str, level: str, message: str, time: str | None = "2026-11-25T11:00:00Z"
) -> StatusView:
    display = {"Error": "Provisioning failed"}.get(level, "Provisioning succeeded")
    return StatusView(code=code, level=level, display_status=display, message=message, time=time)


def ext(name: str, handler: str, state: str = "Enabled", **fields: Any) -> ExtensionView:
    values: dict[str, Any] = {
        "name": name,
        "type": handler,
        "type_handler_version": "1.3.2",
        "handler_state": state,
        "sequence_number": 0,
        "statuses": (status("ProvisioningState/succeeded", "Info", "done"),),
        "substatuses": (),
    }
    values.update(fields)
    return ExtensionView(**values)


def document(view: InstanceView, **options: Any) -> dict[str, Any]:
    goal = parse_goal_state(json.dumps(VM_SETTINGS).encode())
    values: dict[str, Any] = {
        "goal": goal,
        "outcome": GoalOutcome.of(goal, ok=True, time="2026-11-25T11:30:00Z"),
        "agent": AgentStatus(ready=True, message="running"),
        "agent_version": "0.1.0",
        "os": OS,
        "now": NOW,
    }
    values.update(options)
    return build_document(view, **values)


def _one_monitor_extension() -> InstanceView:
    """A view of one enabled extension that reported one substatus."""
    return InstanceView(
        goal_state_id="g",
        extensions=(
            ext(
                "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
                "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
                substatuses=(
                    SubstatusView(
                        code="ComponentStatus/StdOut/succeeded",
                        level="Info",
                        display_status="Provisioning succeeded",
                        message="out",
                    ),
                ),
            ),
        ),
    )


def test_the_whole_document_for_one_extension() -> None:
    view = _one_monitor_extension()
    assert document(view) == {
        "version": "1.1",
        "timestampUTC": NOW,
        "aggregateStatus": {
            "guestAgentStatus": {
                "version": "0.1.0",
                "status": "Ready",
                "formattedMessage": {"lang": "en-US", "message": "running"},
            },
            "handlerAggregateStatus": [
                {
                    "handlerName": "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
                    "handlerVersion": "1.3.2",
                    "status": "Ready",
                    "code": 0,
                    "useExactVersion": True,
                    "formattedMessage": {"lang": "en-US", "message": "Plugin enabled"},
                    "runtimeSettingsStatus": {
                        "sequenceNumber": 0,
                        "settingsStatus": {
                            "version": 1.0,
                            "timestampUTC": "2026-11-25T11:00:00Z",
                            "status": {
                                "name": "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
                                "operation": "Enable",
                                "status": "success",
                                "code": 0,
                                "configurationAppliedTime": "2026-11-25T11:00:00Z",
                                "formattedMessage": {"lang": "en-US", "message": "done"},
                                "substatus": [
                                    {
                                        "name": "StdOut",
                                        "status": "success",
                                        "code": 0,
                                        "formattedMessage": {"lang": "en-US", "message": "out"},
                                    }
                                ],
                            },
                        },
                    },
                }
            ],
            "vmArtifactsAggregateStatus": {
                "goalStateAggregateStatus": {
                    "inSvdSeqNo": "1",
                    "status": "Success",
                    "code": 0,
                    "timestampUTC": "2026-11-25T11:30:00Z",
                    "formattedMessage": {
                        "lang": "en-US",
                        "message": "GoalState executed successfully",
                    },
                }
            },
        },
        "guestOSInfo": {
            "computerName": "web-01",
            "osName": "ubuntu",
            "osVersion": "24.04",
            "version": "0.1.0",
        },
        "supportedFeatures": [{"Key": "MultipleExtensionsPerHandler", "Value": "1.0"}],
    }


def entries(view: InstanceView, **options: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = document(view, **options)["aggregateStatus"][
        "handlerAggregateStatus"
    ]
    return found


def test_multi_config_entries_name_their_extension() -> None:
    handler = "Microsoft.CPlat.Core.RunCommandHandlerLinux"
    view = InstanceView(
        goal_state_id="g",
        extensions=(
            ext("MCExt1", handler),
            ext("MCExt2", handler, state="Installed", sequence_number=2),
        ),
    )
    first, second = entries(view)
    assert first["runtimeSettingsStatus"]["extensionName"] == "MCExt1"
    assert second["runtimeSettingsStatus"]["extensionName"] == "MCExt2"
    assert second["runtimeSettingsStatus"]["sequenceNumber"] == 2
    assert (second["status"], second["formattedMessage"]["message"]) == (
        "NotReady",
        "Plugin disabled",
    )
    assert second["runtimeSettingsStatus"]["settingsStatus"]["status"]["operation"] == "Disable"
    # Single-config entries do not name one; the caller may decide otherwise.
    single = ext("solo", "Contoso.Fleet.Solo")
    assert (
        "extensionName"
        not in entries(InstanceView(goal_state_id="g", extensions=(single,)))[0][
            "runtimeSettingsStatus"
        ]
    )
    decided = entries(
        InstanceView(goal_state_id="g", extensions=(single,)), is_multi=lambda e, g: True
    )
    assert decided[0]["runtimeSettingsStatus"]["extensionName"] == "solo"


def test_failures_transitions_and_heartbeats() -> None:
    failed = ext(
        "bad",
        "Contoso.Fleet.Bad",
        statuses=(status("ProvisioningState/failed/1009", "Error", "Enable failed: exit code 3"),),
    )
    warned = ext(
        "warn",
        "Contoso.Fleet.Warn",
        statuses=(status("ProvisioningState/succeeded", "Warning", "careful"),),
        substatuses=(
            SubstatusView(
                code="ComponentStatus/Disk/failed",
                level="Error",
                display_status="Provisioning failed",
                message="full",
            ),
            SubstatusView(
                code="ComponentStatus/Heartbeat/Unresponsive",
                level="Error",
                display_status="Unresponsive",
                message="Extension heartbeat is not responsive",
            ),
        ),
    )
    fetching = ext(
        "new",
        "Contoso.Fleet.New",
        state="NotInstalled",
        sequence_number=None,
        statuses=(status("ProvisioningState/transitioning", "Info", "fetching", None),),
    )
    bad, warn, new = entries(InstanceView(goal_state_id="g", extensions=(failed, warned, fetching)))
    assert (bad["status"], bad["code"]) == ("NotReady", 1009)
    inner = bad["runtimeSettingsStatus"]["settingsStatus"]["status"]
    assert (inner["status"], inner["code"]) == ("error", 1009)
    assert inner["formattedMessage"]["message"] == "Enable failed: exit code 3"
    assert "substatus" not in inner
    # The heartbeat is the handler's status, not one of the extension's substatuses.
    assert (warn["status"], warn["formattedMessage"]["message"]) == (
        "Unresponsive",
        "Extension heartbeat is not responsive",
    )
    inner = warn["runtimeSettingsStatus"]["settingsStatus"]["status"]
    assert inner["status"] == "warning"
    assert [(s["name"], s["status"]) for s in inner["substatus"]] == [("Disk", "error")]
    # Nothing applied yet: no runtimeSettingsStatus, the handler is being installed.
    assert new["status"] == "Installing"
    assert "runtimeSettingsStatus" not in new


def test_a_refused_goal_state_fails_the_aggregate_and_the_agent() -> None:
    goal = parse_goal_state(EXTENSIONS_CONFIG.encode())
    outcome = GoalOutcome.of(goal, ok=False, time=NOW, message="two extensions on one handler")
    view = InstanceView(goal_state_id=None, extensions=())
    agent = agent_status(view, outcome)
    assert not agent.ready
    assert agent.message == f"goal state {goal.id} was refused: two extensions on one handler"
    doc = document(view, goal=goal, outcome=outcome, agent=agent)
    aggregate = doc["aggregateStatus"]
    assert aggregate["guestAgentStatus"]["status"] == "NotReady"
    assert aggregate["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"] == {
        "inSvdSeqNo": "3",
        "status": "Failed",
        "code": 1,
        "timestampUTC": NOW,
        "formattedMessage": {"lang": "en-US", "message": "two extensions on one handler"},
    }


def test_the_aggregate_waits_for_a_goal_state_and_names_its_sequence() -> None:
    view = InstanceView(goal_state_id=None, extensions=())
    assert "vmArtifactsAggregateStatus" not in document(view, outcome=None)["aggregateStatus"]
    assert agent_status(view, None) == AgentStatus(ready=True, message="running")
    native = parse_goal_state(b'{"id": "web-7", "extensions": []}')
    assert GoalOutcome.of(native, ok=True, time=NOW).in_svd_seq_no == "web-7"
    xml = parse_goal_state(b'<Extensions goalStateIncarnation="4"><Plugins/></Extensions>')
    assert GoalOutcome.of(xml, ok=True, time=NOW).in_svd_seq_no == "4"


def test_the_digest_ignores_times_only() -> None:
    view = InstanceView(goal_state_id="g", extensions=(ext("a", "Contoso.Fleet.A"),))
    later = InstanceView(
        goal_state_id="g",
        extensions=(
            ext(
                "a",
                "Contoso.Fleet.A",
                statuses=(
                    status("ProvisioningState/succeeded", "Info", "done", "2027-01-01T00:00:00Z"),
                ),
            ),
        ),
    )
    other = InstanceView(
        goal_state_id="g",
        extensions=(
            ext(
                "a",
                "Contoso.Fleet.A",
                statuses=(status("ProvisioningState/succeeded", "Info", "changed"),),
            ),
        ),
    )
    base = content_digest(document(view))
    assert content_digest(document(later, now="2027-01-01T00:00:05Z")) == base
    assert content_digest(document(other)) != base


def test_os_info_reads_os_release(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\n')
    info = os_info(str(release))
    assert (info.os_name, info.os_version) == ("ubuntu", "24.04")
    assert info.computer_name
    assert os_info(str(tmp_path / "missing")).os_name


def shape(value: Any) -> Any:
    """The keys of a document, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_the_documented_example_has_the_documents_shape() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "fleet.md").read_text()
    section = page[page.index("### The document") :]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    view = _one_monitor_extension()
    assert shape(example) == shape(document(view))


class _Source:
    """The health of `run`'s goal-state source, as the instance view's `source` gives it."""

    def __init__(self, status: str, message: str = "", since: str | None = None) -> None:
        self.status, self.message, self.since = status, message, since


class _ViewWithSource:
    goal_state_id = "g"
    extensions = ()

    def __init__(self, source: _Source) -> None:
        self.source = source


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (_Source("Ready"), AgentStatus(ready=True, message="running")),
        (
            _Source("Unreachable", "s3://b/g.json: connection refused", "2026-11-25T11:00:00Z"),
            AgentStatus(
                ready=False,
                message="goal-state source unreachable since 2026-11-25T11:00:00Z:"
                " s3://b/g.json: connection refused",
            ),
        ),
        (
            _Source("Invalid", "g.json: not valid JSON", "2026-11-25T11:00:00Z"),
            AgentStatus(
                ready=False,
                message="goal-state source holds a goal state that cannot be used since"
                " 2026-11-25T11:00:00Z: g.json: not valid JSON",
            ),
        ),
    ],
)
def test_the_agent_is_not_ready_while_its_source_fails(
    source: _Source, expected: AgentStatus
) -> None:
    view: Any = _ViewWithSource(source)
    assert agent_status(view, None) == expected
