"""Status upload from a runtime: `RuntimeConfig(status_url=...)`, `--status-url`, and the
goal state's own status blob, written to real Azurite (BlockBlob and PageBlob, by SAS), to
files, and to a server that never answers (the pass does not wait for it)."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from exthandler_sdk import Context, Handler, HandlerError

import exthandler
from exthandler import GoalState, GoalStateError, RuntimeConfig, open_runtime, parse_goal_state
from exthandler._cli.main import main
from tests.sdk.put_server import Answer, PutServer, put_server
from tests.servers import AZURITE_ACCOUNT, Azurite, MotoS3, unique_name


class Greeter(Handler[None, None]):
    name = "Contoso.Fleet.Greeter"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        ctx.status.substatus("Words", "success", "hello")
        await ctx.status.success("greeted")


class Multi(Handler[None, None]):
    name = "Contoso.Fleet.Multi"
    version = "1.0.0"
    supports_multiple_extensions = True

    async def enable(self, ctx: Context[None, None]) -> None:
        await ctx.status.success(f"configured {ctx.extension_name}")


class Broken(Handler[None, None]):
    name = "Contoso.Fleet.Broken"
    version = "1.0.0"

    async def enable(self, ctx: Context[None, None]) -> None:
        raise HandlerError(53, "the settings are wrong")


def native(*extensions: tuple[str, type[Handler[Any, Any]]], id: str = "fleet-1") -> GoalState:
    document = {
        "id": id,
        "extensions": [
            {
                "name": name,
                "publisher": handler.name.rpartition(".")[0],
                "type": handler.name.rpartition(".")[2],
                "typeHandlerVersion": handler.version,
            }
            for name, handler in extensions
        ],
    }
    return parse_goal_state(json.dumps(document).encode())


def config(tmp_path: Path, **options: Any) -> RuntimeConfig:
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "handlers": [Greeter, Multi, Broken],
        "load_entry_points": False,
    }
    values.update(options)
    return RuntimeConfig(**values)


def apply(settings: RuntimeConfig, *goals: GoalState) -> list[exthandler.InstanceView | str]:
    """Apply each goal in one runtime; a refused goal gives its problems."""
    results: list[exthandler.InstanceView | str] = []

    async def go() -> None:
        async with open_runtime(settings) as runtime:
            for goal in goals:
                try:
                    results.append(await runtime.apply(goal))
                except GoalStateError as exc:
                    results.append("; ".join(exc.problems))

    anyio.run(go)
    return results


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "state" / "exthandler.log").read_text()


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = unique_name("status")
    azurite.create_container(name)
    return name


def handlers_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        entry.get("runtimeSettingsStatus", {}).get("extensionName") or entry["handlerName"]: entry
        for entry in document["aggregateStatus"]["handlerAggregateStatus"]
    }


# -- Azure blobs ------------------------------------------------------------------------------


def test_apply_uploads_the_document_as_a_block_blob(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    url = azurite.url(container, "web-01.status")
    (view,) = apply(config(tmp_path, status_url=url), native(("greet", Greeter)))
    assert not isinstance(view, str)
    assert not view.failed()
    data, headers = azurite.get_blob(container, "web-01.status")
    assert headers["x-ms-blob-type"] == "BlockBlob"
    document = json.loads(data)
    assert document["version"] == "1.1"
    aggregate = document["aggregateStatus"]
    assert aggregate["guestAgentStatus"]["version"] == exthandler.__version__
    assert aggregate["guestAgentStatus"]["status"] == "Ready"
    (entry,) = aggregate["handlerAggregateStatus"]
    assert (entry["handlerName"], entry["handlerVersion"], entry["status"]) == (
        "Contoso.Fleet.Greeter",
        "1.0.0",
        "Ready",
    )
    settings = entry["runtimeSettingsStatus"]
    assert "extensionName" not in settings
    inner = settings["settingsStatus"]["status"]
    assert (inner["name"], inner["operation"], inner["status"]) == ("greet", "Enable", "success")
    assert inner["formattedMessage"]["message"] == "greeted"
    assert [s["name"] for s in inner["substatus"]] == ["Words"]
    outcome = aggregate["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
    assert (outcome["inSvdSeqNo"], outcome["status"]) == ("fleet-1", "Success")
    assert document["supportedFeatures"] == [
        {"Key": "MultipleExtensionsPerHandler", "Value": "1.0"}
    ]
    assert document["guestOSInfo"]["version"] == exthandler.__version__


def test_the_goal_states_page_blob_wins_over_the_status_url(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    blob = azurite.url(container, "vm.status").replace("&", "&amp;")
    xml = f"""<Extensions goalStateIncarnation="2">
<InVMGoalStateMetaData inSvdSeqNo="7" />
<Plugins><Plugin name="Contoso.Fleet.Greeter" version="1.0.0" isJson="true"/></Plugins>
<PluginSettings><Plugin name="Contoso.Fleet.Greeter" version="1.0.0">
<RuntimeSettings seqNo="4">{{"runtimeSettings":[{{"handlerSettings":{{}}}}]}}</RuntimeSettings>
</Plugin></PluginSettings>
<StatusUploadBlob statusBlobType="PageBlob">{blob}</StatusUploadBlob></Extensions>"""
    fallback = tmp_path / "fallback.json"
    apply(config(tmp_path, status_url=str(fallback)), parse_goal_state(xml))
    data, headers = azurite.get_blob(container, "vm.status")
    assert headers["x-ms-blob-type"] == "PageBlob"
    assert len(data) % 512 == 0
    document = json.loads(data.rstrip(b"\0"))
    aggregate = document["aggregateStatus"]
    assert aggregate["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]["inSvdSeqNo"] == "7"
    (entry,) = aggregate["handlerAggregateStatus"]
    assert entry["runtimeSettingsStatus"]["sequenceNumber"] == 4
    assert not fallback.exists()


def test_multi_config_entries_name_their_extensions(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    vm_settings = {
        "inSvdSeqNo": 12,
        "statusUploadBlob": {
            "statusBlobType": "BlockBlob",
            "value": azurite.url(container, "multi.status"),
        },
        "extensionGoalStates": [
            {
                "name": "Contoso.Fleet.Multi",
                "version": "1.0.0",
                "isMultiConfig": True,
                "settings": [
                    {"publicSettings": "{}", "seqNo": 0, "extensionName": "first"},
                    {"publicSettings": "{}", "seqNo": 3, "extensionName": "second"},
                ],
            }
        ],
    }
    apply(config(tmp_path), parse_goal_state(json.dumps(vm_settings).encode()))
    document = json.loads(azurite.get_blob(container, "multi.status")[0])
    entries = handlers_of(document)
    assert set(entries) == {"first", "second"}
    assert entries["second"]["runtimeSettingsStatus"]["sequenceNumber"] == 3
    assert (
        entries["second"]["runtimeSettingsStatus"]["settingsStatus"]["status"]["formattedMessage"][
            "message"
        ]
        == "configured second"
    )
    goal_status = document["aggregateStatus"]["vmArtifactsAggregateStatus"]
    assert goal_status["goalStateAggregateStatus"]["inSvdSeqNo"] == "12"


def test_the_manifest_tells_a_multi_config_handler(tmp_path: Path) -> None:
    # The native format does not say; the installed handler's manifest does.
    target = tmp_path / "status.json"
    apply(config(tmp_path, status_url=str(target)), native(("one", Multi), ("solo", Greeter)))
    entries = handlers_of(json.loads(target.read_bytes()))
    assert set(entries) == {"one", "Contoso.Fleet.Greeter"}


def test_failures_and_refusals_are_reported(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    settings = config(tmp_path, status_url=str(target))
    refused = native(("a", Greeter), ("b", Greeter), id="two-on-one")
    _, refusal = apply(settings, native(("broken", Broken)), refused)
    assert isinstance(refusal, str)
    assert "cannot share handler" in refusal
    document = json.loads(target.read_bytes())
    aggregate = document["aggregateStatus"]
    (entry,) = aggregate["handlerAggregateStatus"]  # the view of the last pass that ran
    assert (entry["handlerName"], entry["status"], entry["code"]) == (
        "Contoso.Fleet.Broken",
        "NotReady",
        53,
    )
    inner = entry["runtimeSettingsStatus"]["settingsStatus"]["status"]
    assert (inner["status"], inner["code"]) == ("error", 53)
    assert aggregate["guestAgentStatus"]["status"] == "NotReady"
    assert (
        "goal state two-on-one was refused"
        in aggregate["guestAgentStatus"]["formattedMessage"]["message"]
    )
    outcome = aggregate["vmArtifactsAggregateStatus"]["goalStateAggregateStatus"]
    assert (outcome["inSvdSeqNo"], outcome["status"]) == ("two-on-one", "Failed")


# -- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True])
def test_a_file_destination_is_written_atomically(tmp_path: Path, as_url: bool) -> None:
    target = tmp_path / "out" / "status.json"
    target.parent.mkdir()
    where = target.as_uri() if as_url else str(target)
    apply(config(tmp_path, status_url=where), native(("greet", Greeter)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document = json.loads(target.read_bytes())
    assert handlers_of(document)["Contoso.Fleet.Greeter"]["status"] == "Ready"
    assert os.listdir(target.parent) == ["status.json"]


def test_a_destination_that_cannot_be_written_is_logged(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "status.json"
    (view,) = apply(config(tmp_path, status_url=str(target)), native(("greet", Greeter)))
    assert not isinstance(view, str)
    assert not view.failed()
    assert f"status upload: upload failed (retried with backoff): {target}: cannot write" in (
        log_of(tmp_path)
    )


# -- never in the way ---------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PutServer]:
    with put_server() as running:
        yield running


def test_a_destination_that_never_answers_does_not_hold_up_the_pass(
    tmp_path: Path, server: PutServer
) -> None:
    server.default = Answer(0)
    secret = "NeverLoggedSignature"
    url = server.url(f"/c/vm.status?sv=2019-12-12&sig={secret}")
    settings = config(tmp_path, status_url=url, status_timeout=1.0)
    first, second = apply(settings, native(("greet", Greeter)), native(("bye", Greeter), id="g2"))
    assert not isinstance(first, str)
    assert not first.failed()
    assert not isinstance(second, str)
    assert [e.name for e in second.extensions] == ["bye"]
    assert server.seen  # the uploads were tried (and are still hanging)
    log = log_of(tmp_path)
    # The try in flight timed out, or the last one did not finish before the runtime closed.
    assert "no answer within 1 s" in log or "was not uploaded within 1 s" in log
    assert secret not in log


# -- the command line ----------------------------------------------------------------------------


def test_cli_status_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    goal = tmp_path / "goal.json"
    goal.write_text('{"id": "empty", "extensions": []}')
    target = tmp_path / "status.json"
    state = tmp_path / "state"
    code = main(["apply", str(goal), "--state-dir", str(state), "--status-url", str(target)])
    assert code == 0
    document = json.loads(target.read_bytes())
    assert document["aggregateStatus"]["handlerAggregateStatus"] == []
    outcome = document["aggregateStatus"]["vmArtifactsAggregateStatus"]
    assert outcome["goalStateAggregateStatus"]["inSvdSeqNo"] == "empty"


@pytest.mark.parametrize("command", ["apply", "run"])
def test_cli_refuses_a_status_url_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "goal.json", "--status-url", "ftp://h/status?sv=1&sig=TopSecret"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--status-url: ftp://h/status?sv=1&sig=<redacted>: unsupported status destination" in err
    assert "TopSecret" not in err


# -- plain HTTP and object stores ----------------------------------------------------------------


def test_a_plain_http_url_gets_a_put(
    tmp_path: Path, server: PutServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # an application that logs everything, httpx's too
    server.script = [Answer(500)]  # the first try fails; the last status goes at the end
    settings = config(tmp_path, status_url=server.url("/status/web-01.json?token=Hidden"))
    apply(settings, native(("greet", Greeter)))
    bodies = server.bodies("/status/web-01.json")
    assert len(bodies) >= 2  # (a retry may come before the last upload, on a slow machine)
    assert "x-ms-blob-type" not in server.seen[-1].headers
    document = json.loads(bodies[-1])
    assert handlers_of(document)["Contoso.Fleet.Greeter"]["status"] == "Ready"
    log = log_of(tmp_path)
    assert "HTTP 500" in log
    assert "Hidden" not in log
    assert "PUT" in caplog.text
    assert "Hidden" not in caplog.text


def test_s3_gets_an_object_write(
    tmp_path: Path, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_s3.environment().items():
        monkeypatch.setenv(name, value)
    bucket = unique_name("status")
    client = moto_s3.client()  # type: ignore[no-untyped-call]
    client.create_bucket(Bucket=bucket)
    apply(config(tmp_path, status_url=f"s3://{bucket}/vms/web-01.json"), native(("greet", Greeter)))
    body = client.get_object(Bucket=bucket, Key="vms/web-01.json")["Body"].read()
    assert handlers_of(json.loads(body))["Contoso.Fleet.Greeter"]["status"] == "Ready"


def test_az_gets_a_block_blob_with_the_environments_account(
    tmp_path: Path, azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_SAS_KEY", azurite.account_sas())
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", azurite.endpoint)
    apply(config(tmp_path, status_url=f"az://{container}/web-01.status"), native(("g", Greeter)))
    data, headers = azurite.get_blob(container, "web-01.status")
    assert headers["x-ms-blob-type"] == "BlockBlob"
    assert handlers_of(json.loads(data))["Contoso.Fleet.Greeter"]["status"] == "Ready"


def test_a_store_without_credentials_is_logged_not_fatal(
    tmp_path: Path, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_s3.environment().items():
        monkeypatch.setenv(name, value)
    missing = unique_name("nobucket")
    (view,) = apply(
        config(tmp_path, status_url=f"s3://{missing}/web-01.json"), native(("g", Greeter))
    )
    assert not isinstance(view, str)
    assert not view.failed()
    assert f"status upload: upload failed (retried with backoff): s3://{missing}/web-01.json" in (
        log_of(tmp_path)
    )


# -- the long-running agent ---------------------------------------------------------------------


def test_run_uploads_after_each_goal_state(tmp_path: Path) -> None:
    source = tmp_path / "goal.json"
    target = tmp_path / "status.json"
    settings = config(tmp_path, status_url=str(target), status_interval=0.05)

    def uploaded_sequence() -> str | None:
        try:
            document = json.loads(target.read_bytes())
        except (OSError, ValueError):
            return None
        outcome = document["aggregateStatus"].get("vmArtifactsAggregateStatus")
        return None if outcome is None else str(outcome["goalStateAggregateStatus"]["inSvdSeqNo"])

    async def wait_for(sequence: str) -> None:
        while uploaded_sequence() != sequence:  # noqa: ASYNC110 (another task writes it)
            await anyio.sleep(0.02)

    def write_goal(id: str, name: str) -> None:
        document = {
            "id": id,
            "extensions": [
                {
                    "name": name,
                    "publisher": "Contoso.Fleet",
                    "type": "Greeter",
                    "typeHandlerVersion": "1.0.0",
                }
            ],
        }
        source.write_text(json.dumps(document))

    async def go() -> None:
        async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
            write_goal("run-1", "first")
            group.start_soon(lambda: runtime.run(source, interval=0.05))
            with anyio.fail_after(60):
                await wait_for("run-1")
                write_goal("run-2", "second")
                await wait_for("run-2")
            group.cancel_scope.cancel()

    anyio.run(go)
    document = json.loads(target.read_bytes())
    (entry,) = document["aggregateStatus"]["handlerAggregateStatus"]
    assert entry["runtimeSettingsStatus"]["settingsStatus"]["status"]["name"] == "second"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"status_url": "ftp://h/b?sig=TopSecret"}, "sig=<redacted>: unsupported status"),
        ({"status_url": "s3://"}, "no bucket"),
        ({"status_interval": -1.0}, "status_interval"),
        ({"status_heartbeat": 0.0}, "status_heartbeat"),
        ({"status_timeout": 0.0}, "status_timeout"),
    ],
)
def test_runtime_config_checks_the_status_options(
    tmp_path: Path, options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        RuntimeConfig(state_dir=tmp_path, **options)
    assert "TopSecret" not in str(caught.value)
