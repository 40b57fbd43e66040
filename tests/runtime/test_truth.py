"""The instance view and the exit status tell the truth, on the second apply as on the first.

A refused package stays refused (with its error) until the goal or the package changes;
a failure of the machine or of the download is tried again at every apply; what is
installed stays available without a repository; a goal that gives two extensions to a
handler that takes one is refused before anything changes.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.runtime.support import Agent, Packages, extension, goal, status_of, view_of


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def _manifest(*, multi: bool = False) -> str:
    body = {
        f"{op}Command": f"bin/{op}.sh"
        for op in ("install", "enable", "disable", "update", "uninstall")
    }
    body["supportsMultipleExtensions"] = multi  # type: ignore[assignment]
    return json.dumps([{"name": "Ext", "version": 1.0, "handlerManifest": body}])


@pytest.mark.parametrize(
    ("members", "code"),
    [
        ({"HandlerManifest.json": _manifest(), "../escape.txt": "x"}, 1005),
        ({"bin/enable.sh": "#!/bin/sh\n"}, 1002),
        ({"HandlerManifest.json": "[{not json"}, 1003),
    ],
    ids=["zip-slip", "no-manifest", "bad-manifest"],
)
def test_a_refused_package_stays_failed_on_every_apply(
    agent: Agent, packages: Packages, members: dict[str, str], code: int
) -> None:
    _zip(packages.repo / "Test.Ext__1.0.0.zip", members)
    for _ in range(3):
        exit_code, view = agent.apply(goal(extension("ext")))
        assert exit_code == 1
        status = status_of(view, "ext")
        assert status["code"] == f"ProvisioningState/failed/{code}"
        assert status["level"] == "Error"
        assert view_of(view, "ext")["handlerState"] == "NotInstalled"
    assert agent.take_ops() == []
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    assert not (agent.root / "escape.txt").exists()
    code, out = agent.cli("status", "--state-dir", str(agent.state), "--json")
    assert code == 0
    assert json.loads(out)["extensions"][0]["statuses"][0]["level"] == "Error"


def test_a_refused_package_is_tried_again_once_it_is_replaced(
    agent: Agent, packages: Packages
) -> None:
    bad = _zip(packages.repo / "Test.Ext__1.0.0.zip", {"bin/enable.sh": "#!/bin/sh\n"})
    code, _ = agent.apply(goal(extension("ext")))
    assert code == 1
    bad.unlink()
    packages.build("Test.Ext", "1.0.0")  # the same version, fixed
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Ext-1.0.0",
        "enable Test.Ext-1.0.0",
    ]


def test_a_digest_mismatch_stays_refused_until_the_sidecar_is_fixed(
    agent: Agent, packages: Packages
) -> None:
    package = packages.build("Test.Ext", "1.0.0")
    sidecar = package.with_name(package.name + ".sha256")
    sidecar.write_text("0" * 64 + "  Test.Ext__1.0.0.zip\n")
    for _ in range(2):
        code, view = agent.apply(goal(extension("ext")))
        assert code == 1
        assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1004"
        assert "does not match" in status_of(view, "ext")["message"]
    import hashlib

    sidecar.write_text(hashlib.sha256(package.read_bytes()).hexdigest() + "\n")
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view


def test_a_download_that_did_not_go_through_is_retried_at_every_apply(
    agent: Agent, packages: Packages
) -> None:
    package = packages.build("Test.Ext", "1.0.0")
    # The package's sidecar cannot be read (an I/O failure, not a verdict on the bytes).
    sidecar = package.with_name(package.name + ".sha256")
    sidecar.mkdir()
    for _ in range(2):
        code, view = agent.apply(goal(extension("ext")))
        assert code == 1
        assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1004"
        assert "cannot be read" in status_of(view, "ext")["message"]
    sidecar.rmdir()
    code, view = agent.apply(goal(extension("ext")))
    assert code == 0, view
    assert view_of(view, "ext")["handlerState"] == "Enabled"
    assert [op.short for op in agent.take_ops()] == [
        "install Test.Ext-1.0.0",
        "enable Test.Ext-1.0.0",
    ]


def test_reapplying_without_a_repository_changes_nothing(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext", "1.0.0")
    code, _ = agent.apply(goal(extension("ext")))
    assert code == 0
    agent.take_ops()
    agent.goal_path.write_text(json.dumps(goal(extension("ext"))))
    code, out = agent.cli("apply", str(agent.goal_path), "--state-dir", str(agent.state), "--json")
    assert code == 0, out
    view = json.loads(out)
    assert view_of(view, "ext")["handlerState"] == "Enabled"
    assert view_of(view, "ext")["typeHandlerVersion"] == "1.0.0"
    assert status_of(view, "ext")["code"] == "ProvisioningState/succeeded"
    assert agent.take_ops() == []


def test_a_new_sequence_number_is_not_shown_succeeded_before_its_enable_ran(
    agent: Agent, packages: Packages
) -> None:
    # The enable of the second settings fails without writing a status: the view must
    # show that failure, not the first settings' success under the new sequence number.
    packages.build(
        "Test.Ext",
        "1.0.0",
        actions={
            "enable": 'if [ "$ConfigSequenceNumber" = 1 ]; then exit 3; fi\n'
            'write_status success 0 "seq $ConfigSequenceNumber"'
        },
    )
    code, _ = agent.apply(goal(extension("ext", settings={"n": 1})))
    assert code == 0
    code, view = agent.apply(goal(extension("ext", settings={"n": 2})))
    assert code == 1
    assert view_of(view, "ext")["sequenceNumber"] == 1
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1009"


def test_two_extensions_on_a_single_config_handler_are_refused_before_any_change(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0")
    two = goal(extension("a", settings={"n": 1}), extension("b", settings={"n": 2}))
    code, view = agent.apply(two)
    assert code == 2
    assert view == {}
    assert agent.take_ops() == []
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    agent.goal_path.write_text(json.dumps(two))
    code, _ = agent.cli("validate", str(agent.goal_path), "--repo", str(agent.repo))
    assert code == 2


def test_two_extensions_on_a_single_config_handler_leave_an_installed_one_alone(
    agent: Agent, packages: Packages, capsys: pytest.CaptureFixture[str]
) -> None:
    packages.build("Test.Ext", "1.0.0")
    code, _ = agent.apply(goal(extension("a")))
    assert code == 0
    agent.take_ops()
    capsys.readouterr()
    code, _ = agent.apply(goal(extension("a"), extension("b")))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("$.extensions[1]: 'b' cannot share handler Test.Ext 1.0.0 with 'a'")
    assert "supportsMultipleExtensions" in err
    assert agent.take_ops() == []
    code, out = agent.cli("status", "--state-dir", str(agent.state), "--json")
    assert [e["name"] for e in json.loads(out)["extensions"]] == ["a"]


def test_two_extensions_on_a_multi_config_handler_both_get_their_settings(
    agent: Agent, packages: Packages
) -> None:
    packages.build(
        "Test.Ext",
        "1.0.0",
        manifest={"supportsMultipleExtensions": True},
        actions={
            "enable": 'name="$ConfigExtensionName"\n'
            'cp "$dir/config/$name.0.settings" "$dir/seen.$name"\n'
            "write_status success 0 ok"
        },
    )
    code, view = agent.apply(
        goal(extension("a", settings={"n": 1}), extension("b", settings={"n": 2}))
    )
    assert code == 0, view
    handler_dir = agent.state / "Test.Ext-1.0.0"
    for name, n in (("a", 1), ("b", 2)):
        seen = json.loads((handler_dir / f"seen.{name}").read_text())
        assert seen["runtimeSettings"][0]["handlerSettings"]["publicSettings"] == {"n": n}


def test_validate_without_repositories_checks_what_it_can(agent: Agent) -> None:
    agent.goal_path.write_text(json.dumps(goal(extension("a"), extension("b"))))
    code, out = agent.cli("validate", str(agent.goal_path))
    assert code == 0
    assert "2 extension(s)" in out


def test_a_package_that_cannot_be_laid_out_leaves_no_handler_dir(
    agent: Agent, packages: Packages
) -> None:
    packages.build("Test.Ext", "1.0.0", files={"config": "a file where a dir must be"})
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1005"
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    assert not any("Test.Ext" in p.name for p in agent.state.iterdir())
    assert agent.take_ops() == []
    # It stays refused, with its error, at the next apply too.
    code, view = agent.apply(goal(extension("ext")))
    assert code == 1
    assert status_of(view, "ext")["code"] == "ProvisioningState/failed/1005"
    assert not any("Test.Ext" in p.name for p in agent.state.iterdir())
