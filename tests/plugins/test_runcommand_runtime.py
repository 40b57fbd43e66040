"""Run Command under the runtime (the kit's `exthandler_agent`): several named run commands
of one handler, parameters, timeouts, failures, downloads, another user, the kit's
lifecycle and upgrade checks, faults, and the same view in process and packaged."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import exthandler_plugins
import pytest
from exthandler_plugins.runcommand import RunCommand
from exthandler_plugins.runcommand import _handler as rc_handler
from exthandler_sdk import Operation

from exthandler import InstanceView
from exthandler._plugins import load_object
from exthandler.testing import Agent, Fault, check_lifecycle
from tests.plugins.support import FAST, FileServer, Route

HANDLER = RunCommand.name
DIR = f"{HANDLER}-{RunCommand.version}"
SAS = "sv=2022-11-02&sig=TopSecretSignature%3D"


@pytest.fixture(autouse=True)
def _fast_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunCommand, "download_policy", FAST)


def rc(name: str, settings: dict[str, Any], protected: dict[str, Any] | None = None) -> Any:
    extension: dict[str, Any] = {
        "name": name,
        "publisher": "Microsoft.CPlat.Core",
        "type": "RunCommandHandlerLinux",
        "typeHandlerVersion": "1.3",
        "settings": settings,
    }
    if protected is not None:
        extension["protectedSettings"] = protected
    return extension


def goal(*extensions: Any) -> dict[str, Any]:
    return {"extensions": list(extensions)}


def script(text: str, **settings: Any) -> dict[str, Any]:
    return {"source": {"script": text}, **settings}


def view_of(agent: Agent, name: str) -> tuple[str, dict[str, Any]]:
    """The status code of extension `name` and its message read as the instance view (its
    first line: the runtime appends a line naming a failed command's exit code)."""
    status = agent.status(name)
    return status.code, json.loads(status.message.partition("\n")[0])


@pytest.fixture
def agent(exthandler_agent: Agent) -> Agent:
    exthandler_agent.add_handler(RunCommand)
    return exthandler_agent


def test_registered_through_the_entry_point_hook() -> None:
    paths = exthandler_plugins.exthandler_handler_paths()
    assert load_object(paths[RunCommand.name]) is RunCommand
    assert RunCommand.supports_multiple_extensions
    assert RunCommand.manifest().supports_multiple_extensions


def test_named_run_commands_each_have_their_own_sequence_status_and_run_once(
    agent: Agent, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    first = script(f"echo first >> {runs}; echo one")
    second = script(f"echo second >> {runs}; echo two")
    agent.apply(goal(rc("first", first), rc("second", second)))
    assert [(c.operation, c.extension) for c in agent.take_commands()] == [
        ("install", None),
        ("enable", "first"),
        ("enable", "second"),
    ]
    for name, output in (("first", "one\n"), ("second", "two\n")):
        code, view = view_of(agent, name)
        assert code == "ProvisioningState/succeeded"
        assert (view["executionState"], view["output"], view["exitCode"]) == (
            "Succeeded",
            output,
            0,
        )
    handler_dir = agent.handler_dir(HANDLER, RunCommand.version)
    assert sorted(p.name for p in (handler_dir / "status").iterdir()) == [
        "first.0.status",
        "second.0.status",
    ]
    assert (handler_dir / "first.mrseq").read_text().strip() == "0"
    assert (handler_dir / "second.mrseq").read_text().strip() == "0"
    assert sorted(p.name for p in (handler_dir / "runcommand").iterdir()) == ["first", "second"]

    # Unchanged: nothing runs. A new setting of one: only that one runs, with its own
    # next sequence number.
    agent.apply(goal(rc("first", first), rc("second", second)))
    assert agent.take_commands() == []
    changed = {**second, "timeoutInSeconds": 60}
    agent.apply(goal(rc("first", first), rc("second", changed)))
    assert [(c.operation, c.extension) for c in agent.take_commands()] == [("enable", "second")]
    assert agent.extension("first").sequence_number == 0
    assert agent.extension("second").sequence_number == 1
    assert runs.read_text().splitlines() == ["first", "second", "second"]
    assert [p.name for p in (handler_dir / "runcommand" / "second").iterdir()] == ["1"]

    # Dropping one disables that one only; its runs go, the other's stay.
    after = agent.apply(goal(rc("first", first)))
    assert [(c.operation, c.extension) for c in agent.take_commands()] == [("disable", "second")]
    assert [ext.name for ext in after.extensions] == ["first"]
    assert sorted(p.name for p in (handler_dir / "runcommand").iterdir()) == ["first"]
    assert runs.read_text().splitlines() == ["first", "second", "second"]


def test_parameters_reach_the_script_and_protected_ones_no_process_arguments(
    agent: Agent,
) -> None:
    # The script looks at every process's arguments while it runs; the pattern [A] keeps
    # grep's own arguments from matching.
    text = (
        'printf "%s|" "$#" "$1" "$2" "$3" "$4"; echo "$PUB/$PRIV"\n'
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' 2>/dev/null < $f; echo; done "
        "| grep -c 'TopSecret[A]rg\\|TopSecret[E]nv' >&2\n"
        "exit 0\n"
    )
    agent.apply(
        goal(
            rc(
                "params",
                script(
                    text,
                    parameters=[
                        {"name": "PUB", "value": "public value"},
                        {"value": "first arg"},
                        {"value": "it's $HOME"},
                    ],
                ),
                {
                    "protectedParameters": [
                        {"name": "PRIV", "value": "TopSecretEnv"},
                        {"value": "TopSecretArg"},
                        {"value": ""},
                    ]
                },
            )
        )
    )
    code, view = view_of(agent, "params")
    assert code == "ProvisioningState/succeeded"
    assert view["output"] == "4|first arg|it's $HOME|TopSecretArg||public value/TopSecretEnv\n"
    assert view["error"] == "0\n"  # no process had either secret in its arguments
    run = agent.handler_dir(HANDLER, RunCommand.version) / "runcommand" / "params" / "0"
    assert sorted(p.name for p in run.iterdir()) == ["script.sh", "stderr", "stdout"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in (run, *run.iterdir()))


def test_a_failure_succeeds_with_its_exit_code_unless_it_should_fail_the_deployment(
    agent: Agent,
) -> None:
    failing = "echo partial; echo 'disk full' >&2; exit 7"
    agent.apply(
        goal(
            rc("lenient", script(failing)),
            rc("strict", script(failing, treatFailureAsDeploymentFailure=True)),
        )
    )
    code, view = view_of(agent, "lenient")
    assert code == "ProvisioningState/succeeded"
    assert (view["executionState"], view["exitCode"]) == ("Failed", 7)
    assert view["executionMessage"] == "Execution completed with exit code 7"
    assert (view["output"], view["error"]) == ("partial\n", "disk full\n")
    code, view = view_of(agent, "strict")
    assert code == "ProvisioningState/failed/7"
    assert agent.status("strict").level == "Error"
    assert (view["executionState"], view["exitCode"]) == ("Failed", 7)
    # A failed deployment is tried again by the next enable; a lenient one is done.
    agent.take_commands()
    agent.apply(
        goal(
            {**rc("lenient", script(failing)), "forceUpdateTag": "again"},
            {**rc("strict", script("exit 0", treatFailureAsDeploymentFailure=True))},
        )
    )
    assert view_of(agent, "strict")[0] == "ProvisioningState/succeeded"
    assert agent.extension("strict").sequence_number == 1


def test_the_timeout_kills_the_whole_group_and_keeps_the_partial_output(
    agent: Agent, tmp_path: Path
) -> None:
    child = tmp_path / "child.pid"
    agent.apply(
        goal(
            rc(
                "slow",
                script(
                    f"echo started; sleep 300 & echo $! > {child}; wait",
                    timeoutInSeconds=1,
                    treatFailureAsDeploymentFailure=False,
                ),
            )
        )
    )
    code, view = view_of(agent, "slow")
    assert code == "ProvisioningState/failed/1011"
    assert view["executionState"] == "TimedOut"
    assert view["output"] == "started\n"
    assert view["executionMessage"].startswith("Execution timed out after 1 seconds")
    pid = int(child.read_text())
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"


def test_a_script_uri_is_downloaded_with_its_sas_token_which_no_file_keeps(
    agent: Agent, file_server: FileServer
) -> None:
    file_server.routes["/run.sh"] = Route(body=b'echo "downloaded $1"\n', failures=[503])
    agent.apply(
        goal(
            rc(
                "remote",
                {
                    "source": {"scriptUri": file_server.url("/run.sh")},
                    "parameters": [{"value": "ok"}],
                },
                {"sourceSASToken": SAS},
            ),
            rc(
                "missing",
                {"source": {"scriptUri": file_server.url("/nope.sh")}},
                {"sourceSASToken": SAS},
            ),
        )
    )
    code, view = view_of(agent, "remote")
    assert code == "ProvisioningState/succeeded"
    assert view["output"] == "downloaded ok\n"
    assert file_server.hits("/run.sh") == 2  # the 503 was retried
    assert all(path.endswith(f"?{SAS}") for path, _ in file_server.requests)
    code, view = view_of(agent, "missing")
    assert code == "ProvisioningState/failed/1"
    assert view["executionState"] == "Failed"
    assert view["executionMessage"] == (
        f"{file_server.url('/nope.sh')}?<redacted>: HTTP 404 (not retried)"
    )
    assert "TopSecret" not in json.dumps(agent.instance_view().to_json())
    for path in agent.state_dir.rglob("*"):
        if path.is_file() and path.suffix != ".settings" and path.name != "journal":
            assert b"TopSecret" not in path.read_bytes(), path


def test_run_as_user_drops_to_that_user(agent: Agent) -> None:
    nobody = pwd.getpwnam("nobody")
    text = 'id -u; id -g; id -G; echo "$HOME $USER"; pwd; touch mine; ls -ln mine'
    agent.apply(goal(rc("asuser", script(text, runAsUser="nobody"))))
    code, view = view_of(agent, "asuser")
    assert code == "ProvisioningState/succeeded", view
    lines = view["output"].splitlines()
    assert lines[:3] == [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_gid)]
    assert lines[3] == f"{nobody.pw_dir} nobody"
    work = Path(lines[4])
    assert f" {nobody.pw_uid} {nobody.pw_gid} " in lines[5]
    assert not work.exists()  # the user's work dir went with the run
    # The run dir, with the record disable trusts, stayed the handler's own.
    run = agent.handler_dir(HANDLER, RunCommand.version) / "runcommand" / "asuser" / "0"
    assert {p.stat().st_uid for p in (run, *run.iterdir())} == {os.geteuid()}


def test_bad_settings_are_error_53_with_every_path(agent: Agent) -> None:
    agent.apply(
        goal(
            rc(
                "bad",
                {
                    "source": {},
                    "runAsUser": "no-such-user-here",
                    "parameters": [{"name": "not valid", "value": "x"}],
                },
            ),
        )
    )
    status = agent.status("bad")
    assert status.code == "ProvisioningState/failed/53"
    assert status.message.splitlines()[1:4] == [
        "settings.source: give script or scriptUri",
        "settings.parameters[0].name: 'not valid' is not an environment variable name "
        "(letters, digits and '_', not starting with a digit)",
        "settings.runAsUser: no user 'no-such-user-here' on this machine",
    ]
    # Types are the SDK's business: its error names the path too.
    agent.apply(goal(rc("typed", {"source": {"script": "true"}, "parameters": [{"value": 5}]})))
    status = agent.status("typed")
    assert status.code == "ProvisioningState/failed/53"
    assert "settings.parameters[0].value" in status.message


def test_disable_stops_a_running_script_of_that_extension_only(
    agent: Agent, tmp_path: Path
) -> None:
    """A run killed mid-way (the runtime died) leaves its group recorded; disable of that
    extension stops it, and the other extension's runs stay."""
    agent.apply(goal(rc("keep", script("true")), rc("stop", script("true"))))
    handler_dir = agent.handler_dir(HANDLER, RunCommand.version)
    from exthandler_plugins._shared import process

    run = handler_dir / "runcommand" / "stop" / "0"
    started = process.start(run, "sleep 300", dict(os.environ))
    try:
        agent.apply(goal(rc("keep", script("true"))))
        assert started.wait(timeout=60) == -9
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
    assert not (handler_dir / "runcommand" / "stop").exists()
    assert (handler_dir / "runcommand" / "keep" / "0").is_dir()


def test_lifecycle_and_upgrade_with_the_kit(exthandler_agent: Agent) -> None:
    class Previous(RunCommand):
        version = "1.3.0"

    class Current(RunCommand):
        version = "1.3.1"

    exthandler_agent.add_handler(Previous)
    exthandler_agent.add_handler(Current)
    report = check_lifecycle(
        exthandler_agent,
        Current,
        previous=Previous,
        settings={"source": {"script": "echo lifecycle"}},
        extension="lifecycle",
    )
    assert report is not None


@pytest.mark.parametrize("kind", ["crash", "bad-status"])
def test_faults_of_the_enable_command(exthandler_agent: Agent, kind: str) -> None:
    exthandler_agent.add_handler(RunCommand, fault=Fault(kind=kind, operation=Operation.ENABLE))
    exthandler_agent.apply(goal(rc("faulty", script("echo never"))))
    status = exthandler_agent.status("faulty")
    assert status.level == "Error"
    assert status.code.startswith("ProvisioningState/failed/")


def test_in_process_and_packaged_give_the_same_view(tmp_path: Path) -> None:
    document = goal(
        rc("one", script('echo "one $1"; echo warn >&2', parameters=[{"value": "p"}])),
        rc("two", script("exit 3", treatFailureAsDeploymentFailure=True)),
    )
    inproc = Agent(root=tmp_path / "inproc")
    packaged = Agent(root=tmp_path / "packaged")
    with inproc, packaged:
        inproc.add_handler(RunCommand)
        packaged.add_built_package(RunCommand, "exthandler_plugins.runcommand:RunCommand")
        views = [normal(agent.apply(document)) for agent in (inproc, packaged)]
        assert [r.extension for r in packaged.commands] == [None, "one", "two"]
    assert views[0] == views[1]
    assert views[0]["extensions"][1]["statuses"][0]["code"] == "ProvisioningState/failed/3"


def normal(view: InstanceView) -> Any:
    """The view without times (the message's start and end times included)."""
    data = view.to_json()
    data.pop("goalStateId", None)
    for ext in data["extensions"]:
        for entry in ext["statuses"]:
            entry.pop("time", None)
            # The process executor appends the command's own (empty) output to the
            # runtime's failure note; the in-process executor has none to append.
            message = entry["message"].removesuffix(" [stdout]\n\n\n[stderr]\n")
            first, _newline, rest = message.partition("\n")
            instance = json.loads(first)
            instance["startTime"] = instance["endTime"] = "T"
            entry["message"] = [instance, rest]
    return data


def test_a_running_status_is_reported_while_the_script_runs(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc_handler, "STATUS_INTERVAL", 0.05)
    marker = tmp_path / "seen"
    handler_dir = agent.handler_dir(HANDLER, RunCommand.version)
    status_file = handler_dir / "status" / "long.0.status"
    # The script waits until it sees its own Running status with its first output.
    text = (
        f"echo early; i=0; while ! grep -q Running {status_file} 2>/dev/null; do "
        f'sleep 0.05; i=$((i+1)); [ "$i" -lt 2400 ] || exit 9; done; '
        f"cp {status_file} {marker}"
    )
    agent.apply(goal(rc("long", script(text))))
    assert view_of(agent, "long")[0] == "ProvisioningState/succeeded"
    seen = json.loads(marker.read_text())[0]["status"]
    assert seen["status"] == "transitioning"
    running = json.loads(seen["formattedMessage"]["message"])
    assert running["executionState"] == "Running"
    assert running["startTime"]
    assert not running["endTime"]


ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_example_is_the_example_file_and_does_what_the_page_says(
    agent: Agent,
) -> None:
    page = (ROOT / "docs" / "runcommand.md").read_text()
    example = (ROOT / "examples" / "runcommand" / "goal.json").read_text()
    section = page.partition("\n## Example\n")[2]
    block = section.partition("```json\n")[2].partition("```")[0]
    assert block == example
    agent.apply(json.loads(example))
    outputs = {}
    for name in ("diskReport", "strictCheck"):
        code, view = view_of(agent, name)
        assert code == "ProvisioningState/succeeded"
        assert view["executionState"] == "Succeeded"
        outputs[name] = view["output"]
    assert outputs == {
        "diskReport": "disks on Linux\nreport for ops\n",
        "strictCheck": "token received\n",
    }
    for name, output in outputs.items():
        assert json.dumps(output) in section, name  # as the page quotes it
