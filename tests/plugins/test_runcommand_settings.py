"""Run Command's settings checks and its status message, without running anything."""

from __future__ import annotations

import json

import pytest
from exthandler_plugins.runcommand import (
    Parameter,
    RunCommandProtectedSettings,
    RunCommandSettings,
    ScriptSource,
)
from exthandler_plugins.runcommand._handler import ExecutionState, _launcher, instance_view
from exthandler_plugins.runcommand._settings import DEFAULT_TIMEOUT, resolve, with_sas
from exthandler_sdk import HandlerError
from exthandler_sdk.protocol import STATUS_MESSAGE_LIMIT


def problems(public: RunCommandSettings, protected: RunCommandProtectedSettings | None) -> str:
    with pytest.raises(HandlerError) as caught:
        resolve(public, protected)
    assert caught.value.code == 53
    return caught.value.message


def test_a_plain_script_with_parameters() -> None:
    plan = resolve(
        RunCommandSettings(
            source=ScriptSource(script="echo $1"),
            parameters=[Parameter(name="A", value="1"), Parameter(value="x"), Parameter(value="")],
        ),
        RunCommandProtectedSettings(
            protectedParameters=[Parameter(name="B", value="2"), Parameter(name="", value="y")]
        ),
    )
    assert plan.script == b"echo $1"
    assert plan.env == {"A": "1", "B": "2"}
    assert plan.args == ("x", "", "y")  # public first, then protected; "" is an argument
    assert plan.timeout == DEFAULT_TIMEOUT
    assert plan.download is None
    assert plan.run_as is None
    assert not plan.fail_on_error
    assert not plan.async_execution


def test_every_problem_is_listed_by_path() -> None:
    message = problems(
        RunCommandSettings(
            source=ScriptSource(script="echo", scriptUri="https://h/a.sh", commandId="Run"),
            parameters=[Parameter(name="1BAD", value="v"), Parameter(name="A", value="v")],
            timeoutInSeconds=-1,
            runAsUser="no-such-user-here",
            outputBlobManagedIdentity={},
        ),
        RunCommandProtectedSettings(
            protectedParameters=[Parameter(name="A", value="w"), Parameter(value="a\0b")],
        ),
    )
    assert message.splitlines() == [
        "invalid settings:",
        "settings.source.commandId: not supported here: the platform's built-in commands are "
        "not shipped with this handler; give source.script or source.scriptUri",
        "settings.source: give one of script and scriptUri, not both",
        "settings.parameters[0].name: '1BAD' is not an environment variable name (letters, "
        "digits and '_', not starting with a digit)",
        "protectedSettings.protectedParameters[0].name: 'A' is also given by "
        "settings.parameters[1]",
        "protectedSettings.protectedParameters[1].value: must not contain a NUL character",
        "settings.timeoutInSeconds: must not be negative",
        "settings.runAsUser: no user 'no-such-user-here' on this machine",
        "settings.outputBlobManagedIdentity: not supported here: this runtime has no instance "
        "metadata service to obtain a token from; use a SAS URL or outputBlobSASToken instead",
    ]


def test_source_is_required_and_tokens_need_their_uri() -> None:
    message = problems(
        RunCommandSettings(),
        RunCommandProtectedSettings(sourceSASToken="sig=x", errorBlobSASToken="sig=y"),
    )
    assert "settings.source: give script or scriptUri" in message
    assert "protectedSettings.errorBlobSASToken: given without settings.errorBlobUri" in message
    message = problems(
        RunCommandSettings(source=ScriptSource(script="  ")),
        RunCommandProtectedSettings(sourceSASToken="sig=x"),
    )
    assert "settings.source.script: must not be empty" in message
    assert "protectedSettings.sourceSASToken: given without settings.source.scriptUri" in message


def test_script_uri_takes_the_sas_token_and_the_checks_of_customscript() -> None:
    plan = resolve(
        RunCommandSettings(source=ScriptSource(scriptUri="https://acct.blob.core.windows.net/c/x")),
        RunCommandProtectedSettings(sourceSASToken="?sv=1&sig=TopSecret"),
    )
    assert plan.download is not None
    assert plan.download.url == "https://acct.blob.core.windows.net/c/x?sv=1&sig=TopSecret"
    assert plan.download.name == "script.sh"
    assert plan.download.redacted == "https://acct.blob.core.windows.net/c/x?<redacted>"
    message = problems(
        RunCommandSettings(source=ScriptSource(scriptUri="ftp://h/a.sh?sig=TopSecret")), None
    )
    assert "settings.source.scriptUri: unsupported URL scheme 'ftp'" in message
    assert "TopSecret" not in message


def test_with_sas() -> None:
    assert with_sas("https://h/p", None) == "https://h/p"
    assert with_sas("https://h/p", "?a=1") == "https://h/p?a=1"
    assert with_sas("https://h/p?x=2", "a=1") == "https://h/p?x=2&a=1"
    assert with_sas("https://h/p#sha256=ab", "a=1") == "https://h/p?a=1#sha256=ab"


def test_the_launcher_quotes_every_argument() -> None:
    text = _launcher(("a b", "it's", "$HOME", "")).decode()
    assert text == "set -- 'a b' 'it'\"'\"'s' '$HOME' ''\n. ./script.sh\n"


@pytest.mark.parametrize(
    ("out", "err"),
    [
        ("", ""),
        ("short\n", "x" * 5000),
        ("o" * 5000, "e" * 5000),
        ('\n"\x01' * 2000, "é" * 3000),
    ],
)
def test_the_instance_view_fits_the_message_limit_and_keeps_the_tails(out: str, err: str) -> None:
    text = instance_view(
        ExecutionState.FAILED,
        "Execution completed with exit code 2",
        output=out + "END-OUT",
        error=err + "END-ERR",
        exit_code=2,
        start="2026-01-01T00:00:00Z",
        end="2026-01-01T00:00:01Z",
    )
    assert len(text) <= STATUS_MESSAGE_LIMIT
    view = json.loads(text)
    assert list(view) == [
        "executionState",
        "executionMessage",
        "output",
        "error",
        "exitCode",
        "startTime",
        "endTime",
    ]
    assert view["executionState"] == "Failed"
    assert view["exitCode"] == 2
    assert view["output"].endswith("END-OUT")
    assert view["error"].endswith("END-ERR")
    assert (out + "END-OUT").endswith(view["output"])
    if len(out) < 100 and len(err) > 1000:  # what a short stream leaves goes to the other
        assert view["output"] == out + "END-OUT"
        assert len(text) > STATUS_MESSAGE_LIMIT - 16


def test_a_huge_message_is_cut_but_stays_json() -> None:
    text = instance_view(ExecutionState.FAILED, "m" * 5000, output="o", error="e")
    assert len(text) <= STATUS_MESSAGE_LIMIT
    assert json.loads(text)["executionMessage"].endswith("m ...")
