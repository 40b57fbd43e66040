"""The extension policy: the strict parser, `validate --policy`, and its enforcement
through the command line and the API (a disallowed extension is neither fetched nor run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from exthandler_sdk.protocol import RUNTIME_POLICY_FILE

from exthandler import RuntimeConfig, load_goal_state, open_runtime
from exthandler._model import HandlerName
from exthandler._policy.policy import PolicyError, load_policy, parse_policy
from tests.runtime.support import Agent, Packages, extension, goal, status_of, view_of


def policy_file(tmp_path: Path, document: Any, name: str = "policy.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def allow_only(*names: str, **rules: Any) -> dict[str, Any]:
    return {
        "policyVersion": "0.1.0",
        "extensionPolicies": {
            "allowListedExtensionsOnly": True,
            "extensions": {name: dict(rules) for name in names},
        },
    }


def disallowed(handler: str, op: str, path: Path) -> str:
    return (
        f"Extension will not be processed: failed to {op} extension '{handler}' because it is"
        f" not specified as an allowed extension. To {op}, add the extension to the list of"
        f" allowed extensions in the policy file ('{path}')."
    )


# -- the parser ---------------------------------------------------------------------------


def test_full_policy_parses_with_names_matched_case_insensitively() -> None:
    policy = parse_policy(
        json.dumps(
            {
                "policyVersion": "0.1.0",
                "extensionPolicies": {
                    "allowListedExtensionsOnly": True,
                    "signatureRequired": True,
                    "extensions": {
                        "Contoso.Hello": {"signatureRequired": False, "runtimePolicy": {"a": 1}},
                        "Contoso.Other": {},
                    },
                },
            }
        ).encode(),
        where="p.json",
    )
    hello = HandlerName.parse("CONTOSO.hello")
    other = HandlerName.parse("contoso.OTHER")
    assert policy.allows(hello)
    assert policy.allows(other)
    assert not policy.allows(HandlerName.parse("Contoso.Third"))
    # The per-extension setting overrides the global one; without one the global applies.
    assert not policy.requires_signature(hello)
    assert policy.requires_signature(other)
    assert policy.requires_signature(HandlerName.parse("Contoso.Third"))
    assert policy.runtime_policy(hello) == {"a": 1}
    assert policy.runtime_policy(other) is None


def test_minimal_policy_allows_everything_and_requires_nothing() -> None:
    policy = parse_policy(b'{"policyVersion": "0.1"}', where="p.json")
    handler = HandlerName.parse("Any.Thing")
    assert policy.allows(handler)
    assert not policy.requires_signature(handler)


def test_per_extension_requirement_overrides_a_global_false() -> None:
    policy = parse_policy(
        json.dumps(
            {
                "policyVersion": "0",
                "extensionPolicies": {"extensions": {"A.B": {"signatureRequired": True}}},
            }
        ).encode(),
        where="p.json",
    )
    assert policy.requires_signature(HandlerName.parse("a.b"))
    assert not policy.requires_signature(HandlerName.parse("a.c"))


@pytest.mark.parametrize(
    ("document", "problems"),
    [
        ("[1]", ["p.json: $: must be a JSON object, not an array"]),
        ("{", None),
        ('{"policyVersion": "0.1.0", "policyVersion": "0.1.0"}', None),
        ("{}", ['p.json: $.policyVersion: missing (e.g. "0.1.0")']),
        (
            {"policyVersion": "0.2.0"},
            [
                "p.json: $.policyVersion: 0.2.0 is not supported (this runtime knows policy"
                " versions up to 0.1.0)"
            ],
        ),
        (
            {"policyVersion": "1"},
            [
                "p.json: $.policyVersion: 1 is not supported (this runtime knows policy"
                " versions up to 0.1.0)"
            ],
        ),
        (
            {"policyVersion": 0.1},
            ["p.json: $.policyVersion: must be a string major[.minor[.patch]], not 0.1"],
        ),
        (
            {"policyVersion": "0.1.0.0"},
            ["p.json: $.policyVersion: must be a string major[.minor[.patch]], not '0.1.0.0'"],
        ),
        (
            {"policyVersion": "0.1.0", "extra": 1},
            [
                "p.json: $.extra: unknown key (known: extensionPolicies, policyVersion)",
            ],
        ),
        (
            {"policyVersion": "0.1.0", "extensionPolicies": []},
            ["p.json: $.extensionPolicies: must be an object, not an array"],
        ),
        (
            {
                "policyVersion": "0.1.0",
                "extensionPolicies": {
                    "allowListedExtensionsOnly": "true",
                    "signatureRequired": 1,
                    "signatureRequire": True,
                },
            },
            [
                "p.json: $.extensionPolicies.signatureRequire: unknown key (known:"
                " allowListedExtensionsOnly, extensions, signatureRequired)",
                "p.json: $.extensionPolicies.allowListedExtensionsOnly: must be true or"
                " false, not a string",
                "p.json: $.extensionPolicies.signatureRequired: must be true or false, not"
                " a number",
            ],
        ),
        (
            {
                "policyVersion": "0.1.0",
                "extensionPolicies": {
                    "extensions": {
                        "A.B": {"signatureRequired": None, "runtimePolicy": [1], "x": 0},
                        "a.b": {},
                        "NoDot": {},
                        "C.D": 3,
                    }
                },
            },
            [
                "p.json: $.extensionPolicies.extensions.A.B.x: unknown key (known:"
                " runtimePolicy, signatureRequired)",
                "p.json: $.extensionPolicies.extensions.A.B.runtimePolicy: must be an object,"
                " not an array",
                "p.json: $.extensionPolicies.extensions.A.B.signatureRequired: must be true"
                " or false, not null",
                "p.json: $.extensionPolicies.extensions.a.b: names the same extension as 'A.B'",
                "p.json: $.extensionPolicies.extensions.NoDot: not an extension name"
                " 'Publisher.Type'",
                "p.json: $.extensionPolicies.extensions.C.D: must be an object, not a number",
            ],
        ),
    ],
)
def test_invalid_policies_list_every_problem(document: Any, problems: list[str] | None) -> None:
    data = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(PolicyError) as caught:
        parse_policy(data.encode(), where="p.json")
    if problems is None:
        assert len(caught.value.problems) == 1
        assert caught.value.problems[0].startswith("p.json: $: not valid JSON (")
    else:
        assert list(caught.value.problems) == problems


def test_policy_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "missing.json")
    assert caught.value.problems == (
        f"{tmp_path / 'missing.json'}: cannot be read: No such file or directory",
    )
    target = policy_file(tmp_path, {"policyVersion": "0.1.0"})
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(PolicyError, match=r"link\.json: cannot be read"):
        load_policy(link)


# -- validate --policy ------------------------------------------------------------------


def test_validate_checks_a_policy_file_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exthandler._cli.main import main

    good = policy_file(tmp_path, allow_only("Test.Ext", signatureRequired=True))
    assert main(["validate", "--policy", str(good)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{good}: valid policy, allowListedExtensionsOnly=true, signatureRequired=false,"
        " 1 extension(s) named\n"
    )
    bad = policy_file(tmp_path, {"policyVersion": "9"}, "bad.json")
    assert main(["validate", "--policy", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"{bad}: $.policyVersion: 9 is not supported (this runtime knows policy versions up"
        " to 0.1.0)\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["validate"])
    assert exited.value.code == 2
    assert "give GOAL, --policy FILE, or both" in capsys.readouterr().err


def test_validate_goal_with_policy_names_the_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exthandler._cli.main import main

    policy = policy_file(tmp_path, allow_only("Test.Ext"))
    goal_path = tmp_path / "goal.json"
    goal_path.write_text(json.dumps(goal(extension("a"), extension("b", "Other.Ext"))))
    assert main(["validate", str(goal_path), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert (
        f"  warning: b: refused by the policy (1009): {disallowed('Other.Ext', 'run', policy)}"
        in out
    )
    assert "warning: a:" not in out


# -- enforcement --------------------------------------------------------------------------


def test_disallowed_extension_is_neither_fetched_nor_run(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    packages.build("Other.Ext")
    policy = policy_file(tmp_path, allow_only("other.EXT"))
    code, view = agent.apply(
        goal(extension("a"), extension("b", "Other.Ext")), "--policy", str(policy)
    )
    assert code == 1
    status = status_of(view, "a")
    assert status["code"] == "ProvisioningState/failed/1009"
    assert status["message"] == disallowed("Test.Ext", "run", policy)
    assert status_of(view, "b")["code"] == "ProvisioningState/succeeded"
    assert [op.short for op in agent.ops()] == [
        "install Other.Ext-1.0.0",
        "enable Other.Ext-1.0.0",
    ]
    assert not list(agent.state.glob("Test.Ext*"))
    assert not list((agent.state / ".exthandler").rglob("Test.Ext*"))


@pytest.mark.parametrize("state", ["disabled", "uninstall"])
def test_disallowed_removal_is_1010_and_runs_nothing(
    agent: Agent, packages: Packages, tmp_path: Path, state: str
) -> None:
    packages.build("Test.Ext")
    code, _ = agent.apply(goal(extension("a")))
    assert code == 0
    agent.take_ops()
    policy = policy_file(tmp_path, allow_only("Other.Ext"))
    code, view = agent.apply(goal(extension("a", state=state)), "--policy", str(policy))
    assert agent.take_ops() == []
    assert (agent.state / "Test.Ext-1.0.0").is_dir()  # left as it was
    if state == "disabled":
        status = status_of(view, "a")
        assert status["code"] == "ProvisioningState/failed/1010"
        assert status["message"] == disallowed("Test.Ext", "uninstall", policy)
    # Dropped from the goal altogether: it is not uninstalled either.
    code, view = agent.apply(goal(), "--policy", str(policy))
    assert agent.take_ops() == []
    assert (agent.state / "Test.Ext-1.0.0").is_dir()
    assert (
        "Test.Ext: left installed: the policy keeps it from running"
        in (agent.state / "exthandler.log").read_text()
    )


def test_dependents_of_a_disallowed_extension_are_blocked(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    packages.build("Other.Ext")
    policy = policy_file(tmp_path, allow_only("Other.Ext"))
    code, view = agent.apply(
        goal(extension("a"), extension("b", "Other.Ext", provisionAfterExtensions=["a"])),
        "--policy",
        str(policy),
    )
    assert code == 1
    status = status_of(view, "b")
    assert status["code"].startswith("ProvisioningState/failed")
    assert status["message"] == (
        "skipped: extension 'a' it depends on did not succeed: "
        + disallowed("Test.Ext", "run", policy)
    )
    assert agent.ops() == []


def test_invalid_policy_blocks_every_extension(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    policy = policy_file(tmp_path, {"policyVersion": "0.1.0", "extensionPolicies": 1})
    code, view = agent.apply(
        goal(extension("a"), extension("b", state="disabled")), "--policy", str(policy)
    )
    assert code == 1
    assert status_of(view, "a")["code"] == "ProvisioningState/failed/1009"
    assert status_of(view, "b")["code"] == "ProvisioningState/failed/1010"
    problem = f"{policy}: $.extensionPolicies: must be an object, not a number"
    for name in ("a", "b"):
        assert status_of(view, name)["message"] == (
            f"Extension will not be processed: the policy file is invalid: {problem}"
        )
    assert agent.ops() == []


def test_missing_policy_file_blocks_every_extension(
    agent: Agent, packages: Packages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages.build("Test.Ext")
    monkeypatch.setenv("EXTHANDLER_POLICY", str(tmp_path / "nowhere.json"))
    code, view = agent.apply(goal(extension("a")))
    assert code == 1
    assert status_of(view, "a")["message"].endswith(
        f"{tmp_path / 'nowhere.json'}: cannot be read: No such file or directory"
    )
    assert agent.ops() == []


def test_policy_from_the_environment(
    agent: Agent, packages: Packages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages.build("Test.Ext")
    policy = policy_file(tmp_path, allow_only("Other.Ext"))
    monkeypatch.setenv("EXTHANDLER_POLICY", str(policy))
    code, view = agent.apply(goal(extension("a")))
    assert status_of(view, "a")["message"] == disallowed("Test.Ext", "run", policy)
    # --policy wins over the environment.
    allowing = policy_file(tmp_path, allow_only("test.ext"), "allowing.json")
    code, view = agent.apply(goal(extension("a")), "--policy", str(allowing))
    assert code == 0


def test_no_extensions_processes_nothing(agent: Agent, packages: Packages) -> None:
    packages.build("Test.Ext")
    code, view = agent.apply(
        goal(extension("a"), extension("b", "Test.Other", state="disabled")), "--no-extensions"
    )
    assert code == 1
    for name, handler, code_text in (("a", "Test.Ext", "1009"), ("b", "Test.Other", "1010")):
        status = status_of(view, name)
        assert status["code"] == f"ProvisioningState/failed/{code_text}"
        assert status["message"] == (
            f"Extension '{handler}' will not be processed since extension processing is"
            " disabled. To enable extension processing, set --no-extensions off in"
            " 'the exthandler apply command line'"
        )
    assert agent.ops() == []
    assert not list(agent.state.glob("Test.*"))


def test_plan_shows_what_the_policy_refuses(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    policy = policy_file(tmp_path, allow_only("Other.Ext"))
    agent.goal_path.write_text(json.dumps(goal(extension("a"))))
    _code, out = agent.cli(
        "plan", str(agent.goal_path), "--state-dir", str(agent.state), "--repo",
        str(agent.repo), "--policy", str(policy), "--json",
    )  # fmt: skip
    plan = json.loads(out)
    assert plan["steps"] == []
    assert plan["problems"] == [f"a: {disallowed('Test.Ext', 'run', policy)} (1009)"]


def test_runtime_policy_is_handed_to_the_handler(
    agent: Agent, packages: Packages, tmp_path: Path
) -> None:
    packages.build(
        "Test.Ext",
        actions={
            "enable": 'cp "$dir/config/runtimePolicy.json" "$dir/../seen.json" 2>/dev/null;'
            " write_status success 0 ok"
        },
    )
    rules = {"maxRuntime": 30, "allowed": ["x"]}
    document = allow_only("Test.Ext", runtimePolicy=rules)
    policy = policy_file(tmp_path, document)
    code, _ = agent.apply(goal(extension("a")), "--policy", str(policy))
    assert code == 0
    assert json.loads((agent.state / "seen.json").read_text()) == rules
    config_file = agent.state / "Test.Ext-1.0.0" / "config" / RUNTIME_POLICY_FILE
    assert config_file.stat().st_mode & 0o777 == 0o600
    # The policy no longer gives one: the file goes.
    policy_file(tmp_path, allow_only("Test.Ext"))
    code, _ = agent.apply(goal(extension("a", settings={"n": 2})), "--policy", str(policy))
    assert code == 0
    assert not config_file.exists()


def test_api_policy_and_switch(tmp_path: Path, packages: Packages) -> None:
    packages.build("Test.Ext")
    policy = policy_file(tmp_path, allow_only("Other.Ext"))
    the_goal = load_goal_state(json.dumps(goal(extension("a"))).encode())

    async def main(**options: Any) -> dict[str, Any]:
        config = RuntimeConfig(
            state_dir=tmp_path / "state",
            repositories=[packages.repo],
            load_entry_points=False,
            **options,
        )
        async with open_runtime(config) as runtime:
            view = await runtime.apply(the_goal)
        return view.to_json()

    view = anyio.run(lambda: main(policy=policy))
    assert status_of(view, "a")["message"] == disallowed("Test.Ext", "run", policy)
    view = anyio.run(lambda: main(extensions_enabled=False))
    assert status_of(view, "a")["message"] == (
        "Extension 'Test.Ext' will not be processed since extension processing is disabled."
        " To enable extension processing, set extensions_enabled=True in 'RuntimeConfig'"
    )
    # A host names its own switch.
    switch = ("Extensions.Enabled=y", "/etc/host-agent.conf")
    view = anyio.run(lambda: main(extensions_enabled=False, extensions_switch=switch))
    assert status_of(view, "a")["message"].endswith(
        "set Extensions.Enabled=y in '/etc/host-agent.conf'"
    )
    assert view_of(view, "a")["handlerState"] == "NotInstalled"


def test_policy_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = policy_file(tmp_path, {"policyVersion": "0.1.0"})
    path.chmod(0o666)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == (f"{path}: cannot be read: writable by other users (mode 666)",)
    path.chmod(0o644)
    assert load_policy(path).path == str(path)
