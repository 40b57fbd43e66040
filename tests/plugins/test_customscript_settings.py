"""CustomScript's settings: merging public and protected, validation, redaction, signing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac

import pytest
from exthandler_plugins._shared.download import shared_key
from exthandler_plugins._shared.process import dos2unix
from exthandler_plugins._shared.redact import redact_text, redact_url
from exthandler_plugins.customscript import CustomScriptProtectedSettings, CustomScriptSettings
from exthandler_plugins.customscript._settings import StorageAccount, resolve
from exthandler_sdk import HandlerError

KEY = base64.b64encode(b"k" * 32).decode()


def refused(public: CustomScriptSettings, protected: CustomScriptProtectedSettings) -> str:
    with pytest.raises(HandlerError) as caught:
        resolve(public, protected)
    assert caught.value.code == 53
    return caught.value.message


def test_protected_settings_carry_the_same_keys() -> None:
    plan = resolve(
        CustomScriptSettings(fileUris=["https://example.com/a.sh"], timestamp=3),
        CustomScriptProtectedSettings(commandToExecute="sh a.sh"),
    )
    assert plan.command == "sh a.sh"
    assert [f.name for f in plan.files] == ["a.sh"]
    assert plan.timestamp == 3
    assert plan.dos2unix
    assert "sh a.sh" not in repr(plan)


def test_a_key_in_both_is_an_error_naming_it() -> None:
    message = refused(
        CustomScriptSettings(commandToExecute="a", timestamp=1),
        CustomScriptProtectedSettings(commandToExecute="b", timestamp=2),
    )
    assert "commandToExecute: set in both the public and the protected settings" in message
    assert "timestamp: set in both" in message


@pytest.mark.parametrize(
    ("public", "expected"),
    [
        (CustomScriptSettings(), "one of commandToExecute or script is required"),
        (
            CustomScriptSettings(commandToExecute="x", script="eA=="),
            "give one of them, not both",
        ),
        (CustomScriptSettings(commandToExecute="  "), "commandToExecute: must not be empty"),
        (CustomScriptSettings(script=""), "script: must not be empty"),
        (CustomScriptSettings(script="not base64!"), "script: not valid base64"),
        (
            CustomScriptSettings(script=base64.b64encode(b"\x1f\x8bjunk").decode()),
            "cannot be decompressed",
        ),
    ],
)
def test_command_or_script(public: CustomScriptSettings, expected: str) -> None:
    assert expected in refused(public, CustomScriptProtectedSettings())


def test_script_plain_or_gzipped() -> None:
    plain = base64.b64encode(b"echo hi\r\n").decode()
    assert resolve(CustomScriptSettings(script=plain), None).script == b"echo hi\r\n"
    packed = base64.b64encode(gzip.compress(b"echo hi\n")).decode()
    assert resolve(None, CustomScriptProtectedSettings(script=packed)).script == b"echo hi\n"


def test_file_uris_are_checked() -> None:
    digest = "ab" * 32
    plan = resolve(
        CustomScriptSettings(
            commandToExecute="x",
            fileUris=[
                "https://acct.blob.core.windows.net/c/run%20me.sh?sv=1&sig=SECRET",
                f"file:///tmp/data.bin#sha256={digest.upper()}",
            ],
            skipDos2Unix=True,
        ),
        None,
    )
    assert [(f.name, f.sha256) for f in plan.files] == [("run me.sh", None), ("data.bin", digest)]
    assert plan.files[1].url == "file:///tmp/data.bin"
    assert not plan.dos2unix
    message = refused(
        CustomScriptSettings(
            commandToExecute="x",
            fileUris=[
                "ftp://host/a?sig=SECRET",
                "https://host/dir/",
                "https://host/b#md5=00",
                "file://elsewhere/c",
                "https://one/d",
                "https://two/d?sig=SECRET",
                "http://[::1",
                "plain",
                "https://host/..%2Fescape",
            ],
        ),
        CustomScriptProtectedSettings(),
    )
    assert "SECRET" not in message
    assert "fileUris[0]: unsupported URL scheme 'ftp' in ftp://host/a?<redacted>" in message
    assert "fileUris[1]: https://host/dir/ does not end in a usable file name" in message
    assert "fileUris[8]: https://host/..%2Fescape does not end" in message
    assert "fileUris[2]: the URL fragment must be '#sha256=<64 hex digits>'" in message
    assert "fileUris[3]: a file URL must name a local path" in message
    assert "would both be saved as 'd'" in message
    assert "fileUris[6]: not a URL" in message
    assert "fileUris[7]: unsupported URL scheme '(none)'" in message


def test_managed_identity_is_refused_clearly() -> None:
    message = refused(
        CustomScriptSettings(commandToExecute="x"),
        CustomScriptProtectedSettings(managedIdentity={}, storageAccountName="acct"),
    )
    assert "managedIdentity: not supported here" in message
    assert "cannot be combined with storageAccountName" in message


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("acct", None, "give both, or neither (only storageAccountName is set)"),
        (None, KEY, "only storageAccountKey is set"),
        ("Bad_Name", KEY, "storageAccountName: a storage account name is"),
        ("acct", "%%%", "storageAccountKey: not a base64 storage account key"),
    ],
)
def test_storage_account_settings(name: str | None, key: str | None, expected: str) -> None:
    message = refused(
        CustomScriptSettings(commandToExecute="x", storageAccountName=name),
        CustomScriptProtectedSettings(storageAccountKey=key),
    )
    assert expected in message
    assert KEY not in message


def test_storage_account_accepted() -> None:
    plan = resolve(
        CustomScriptSettings(commandToExecute="x", storageAccountName="acct"),
        CustomScriptProtectedSettings(storageAccountKey=KEY),
    )
    assert plan.storage == StorageAccount(name="acct", key=b"k" * 32)
    assert KEY not in repr(plan.storage)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://a.blob.core.windows.net/c/s.sh?sv=1&sig=X",
            "https://a.blob.core.windows.net/c/s.sh?<redacted>",
        ),
        ("https://user:pw@host:8443/p#frag", "https://host:8443/p"),
        ("http://[::1]:80/x?y", "http://[::1]:80/x?<redacted>"),
        ("http://[::1/x?sig=1", "http://[::1/x?<redacted>"),
        ("file:///tmp/a", "file:///tmp/a"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text() -> None:
    text = "Client error for url 'https://h/p?sig=abc' and http://u:p@h2/q?x=1 done"
    assert redact_text(text) == (
        "Client error for url 'https://h/p?<redacted>' and http://h2/q?<redacted> done"
    )


def test_shared_key_signature() -> None:
    account = StorageAccount(name="acct", key=b"secret")
    headers = {"x-ms-version": "2020-10-02", "x-ms-date": "Mon, 01 Jan 2024 00:00:00 GMT"}
    value = shared_key(account, "https://acct.blob.core.windows.net/c/a%20b?comp=x&B=2", headers)
    text = (
        "GET" + "\n" * 12 + "x-ms-date:Mon, 01 Jan 2024 00:00:00 GMT\nx-ms-version:2020-10-02\n"
        "/acct/c/a%20b\nb:2\ncomp:x"
    )
    expected = base64.b64encode(hmac.new(b"secret", text.encode(), hashlib.sha256).digest())
    assert value == f"SharedKey acct:{expected.decode()}"


def test_dos2unix() -> None:
    assert dos2unix(b"\xef\xbb\xbfa\r\nb\r\n") == b"a\nb\n"
    assert dos2unix(b"\0binary\r\n") == b"\0binary\r\n"
