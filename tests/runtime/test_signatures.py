"""Signed packages: verified with the reference agent's rule before anything of them is
extracted or run, each refusal with its own message, through the CLI and the API; and
cross-checked with the openssl command line both ways."""

from __future__ import annotations

import base64
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from exthandler_sdk import hookimpl
from exthandler_sdk.protocol import TelemetryEvent

from exthandler import RuntimeConfig, load_goal_state, open_runtime
from exthandler._model import HandlerName, Version
from exthandler._policy._openssl import cms_verify
from exthandler._policy.signature import (
    SIGNATURE_TASK,
    CheckOutcome,
    PackageVerifier,
    SignatureCheck,
)
from exthandler._testing._ca import SigningCA
from tests.runtime.support import Agent, Packages, extension, goal, status_of, view_of

SIGNING_INFO = {"signingInfo": {"type": "ext", "publisher": "TEST", "version": "1.0.0"}}


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> SigningCA:
    return SigningCA(tmp_path_factory.mktemp("signing-ca"))


def policy(tmp_path: Path, *, required: bool = True, name: str = "policy.json") -> Path:
    path = tmp_path / name
    document = {"policyVersion": "0.1.0", "extensionPolicies": {"signatureRequired": required}}
    path.write_text(json.dumps(document))
    return path


def reference_accepts(signature: Path, content: Path, root: Path) -> bool:
    """What the reference agent's command accepts."""
    result = subprocess.run(
        [
            "openssl", "cms", "-verify", "-binary", "-inform", "der", "-in", str(signature),
            "-content", str(content), "-purpose", "any", "-no_check_time",
            "-CAfile", str(root), "-out", "/dev/null",
        ],
        capture_output=True,
        check=False,
    )  # fmt: skip
    return result.returncode == 0


def openssl_sign(tmp_path: Path, content: Path, key: Path, cert: Path, *extra: str) -> bytes:
    out = tmp_path / "openssl.der"
    subprocess.run(
        [
            "openssl", "cms", "-sign", "-binary", "-in", str(content), "-signer", str(cert),
            "-inkey", str(key), "-outform", "der", "-out", str(out), *extra,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out.read_bytes()


# -- the rule: what openssl accepts, and nothing else ---------------------------------


def _cases(ca: SigningCA, tmp_path: Path, content: Path) -> dict[str, bytes]:
    data = content.read_bytes()
    leaf, inter = ca.leaf, ca.intermediate
    chain = ("-certfile", str(ca.chain_path))
    return {
        "leaf": ca.signature(data),
        "expired leaf": ca.signature(data, ca.expired_leaf),
        "other root": ca.signature(data, ca.stranger),
        "other content": ca.signature(data + b"!"),
        "garbage": b"\x30\x03\x02\x01\x00",
        "empty": b"",
        "root itself": openssl_sign(tmp_path, content, ca.root.key_path, ca.root.certificate_path),
        "intermediate itself": openssl_sign(
            tmp_path, content, inter.key_path, inter.certificate_path
        ),
        "leaf without its chain": openssl_sign(
            tmp_path, content, leaf.key_path, leaf.certificate_path
        ),
        "leaf by openssl": openssl_sign(
            tmp_path, content, leaf.key_path, leaf.certificate_path, *chain
        ),
        "leaf by openssl, no attributes": openssl_sign(
            tmp_path, content, leaf.key_path, leaf.certificate_path, *chain, "-noattr"
        ),
        "leaf by openssl, sha512": openssl_sign(
            tmp_path, content, leaf.key_path, leaf.certificate_path, *chain, "-md", "sha512"
        ),
        "attached, not detached": openssl_sign(
            tmp_path, content, leaf.key_path, leaf.certificate_path, *chain, "-nodetach"
        ),
    }


def test_runtime_accepts_exactly_what_the_reference_command_accepts(
    ca: SigningCA, tmp_path: Path
) -> None:
    content = tmp_path / "package.zip"
    content.write_bytes(b"PK\x05\x06" + bytes(18) + b"some package bytes" * 100)
    verdicts = {}
    for label, signature in _cases(ca, tmp_path, content).items():
        path = tmp_path / "signature.der"
        path.write_bytes(signature)
        for root in (ca.root.certificate_path, ca.other_root.certificate_path):
            ours = anyio.run(cms_verify, path, content, root).ok
            assert ours == reference_accepts(path, content, root), (label, root.name)
            verdicts[(label, root.name)] = ours
    # Both ways: the cases cover acceptance and refusal.
    assert verdicts[("leaf", "root.pem")]
    assert verdicts[("expired leaf", "root.pem")]
    assert verdicts[("leaf by openssl", "root.pem")]
    assert verdicts[("other root", "other-root.pem")]
    assert not verdicts[("other root", "root.pem")]
    assert not verdicts[("leaf", "other-root.pem")]
    assert not verdicts[("other content", "root.pem")]
    assert not verdicts[("garbage", "root.pem")]
    assert not verdicts[("leaf without its chain", "root.pem")]


def test_sdk_signatures_verify_with_openssl(ca: SigningCA, tmp_path: Path) -> None:
    content = tmp_path / "p.zip"
    content.write_bytes(b"whatever the publisher built")
    signature = ca.sign_package(content)
    assert signature.name == "p.zip.sig"
    der = tmp_path / "p.der"
    der.write_bytes(base64.b64decode(signature.read_text()))
    assert reference_accepts(der, content, ca.root.certificate_path)
    assert not reference_accepts(der, content, ca.other_root.certificate_path)


# -- through the command line -----------------------------------------------------------


@pytest.fixture
def signed(agent: Agent, packages: Packages, ca: SigningCA) -> Path:
    """Test.Ext 1.0.0, signed by the CA's leaf with matching signingInfo."""
    package = packages.build("Test.Ext", entry=SIGNING_INFO)
    ca.sign_package(package)
    return package


def apply_signed(
    agent: Agent, ca: SigningCA, tmp_path: Path, *extensions: dict[str, Any], required: bool = True
) -> tuple[int, dict[str, Any]]:
    return agent.apply(
        goal(*(extensions or (extension("a"),))),
        "--policy", str(policy(tmp_path, required=required)),
        "--trusted-root", str(ca.other_root.certificate_path),
        "--trusted-root", str(ca.root.certificate_path),
    )  # fmt: skip


def assert_refused(agent: Agent, view: dict[str, Any], message: str) -> None:
    status = status_of(view, "a")
    assert status["code"] == "ProvisioningState/failed/1004"
    assert status["message"] == f"Test.Ext 1.0.0: {message}"
    assert agent.ops() == []
    assert not (agent.state / "Test.Ext-1.0.0").exists()
    # Nothing was laid out anywhere: the workspace is empty again.
    assert list((agent.state / ".exthandler" / "downloads").iterdir()) == []
    assert not list(agent.state.rglob("enable.sh"))


def test_signed_package_is_verified_and_run(
    agent: Agent, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 0
    assert status_of(view, "a")["code"] == "ProvisioningState/succeeded"
    assert view_of(view, "a")["substatuses"] == []
    assert [op.op for op in agent.ops()] == ["install", "enable"]


def test_signature_from_the_goal_state_wins_over_the_sidecar(
    agent: Agent, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    good = signed.with_name(signed.name + ".sig").read_text().strip()
    signed.with_name(signed.name + ".sig").write_text(base64.b64encode(b"junk").decode())
    code, view = apply_signed(agent, ca, tmp_path, extension("a", encodedSignature=good))
    assert code == 0, view


def test_expired_signing_certificate_is_accepted(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    ca.sign_package(packages.build("Test.Ext", entry=SIGNING_INFO), ca.expired_leaf)
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 0, view


def test_signature_made_by_openssl_is_accepted(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    package = packages.build("Test.Ext", entry=SIGNING_INFO)
    leaf = ca.leaf
    der = openssl_sign(
        tmp_path, package, leaf.key_path, leaf.certificate_path, "-certfile", str(ca.chain_path)
    )
    code, view = apply_signed(
        agent, ca, tmp_path, extension("a", encodedSignature=base64.b64encode(der).decode())
    )
    assert code == 0, view


def test_missing_signature_is_refused(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    packages.build("Test.Ext", entry=SIGNING_INFO)
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 1
    assert_refused(
        agent,
        view,
        "the policy requires a signed package, and this one is not signed (no"
        " encodedSignature in the goal state, no Test.Ext__1.0.0.zip.sig beside the package)",
    )


def test_malformed_signatures_are_refused(
    agent: Agent, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    sidecar = signed.with_name(signed.name + ".sig")
    sidecar.write_text("not base64 at all!")
    _code, view = apply_signed(agent, ca, tmp_path)
    assert_refused(
        agent,
        view,
        "the package signature (the repository's Test.Ext__1.0.0.zip.sig) is malformed: not base64",
    )
    not_cms = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()
    _code, view = apply_signed(agent, ca, tmp_path, extension("a", encodedSignature=not_cms))
    message = status_of(view, "a")["message"]
    assert message.startswith(
        "Test.Ext 1.0.0: the package signature (the goal state's encodedSignature) is malformed ("
    )
    assert agent.ops() == []


def test_untrusted_signature_is_refused(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    ca.sign_package(packages.build("Test.Ext", entry=SIGNING_INFO), ca.stranger)
    code, view = agent.apply(
        goal(extension("a")),
        "--policy", str(policy(tmp_path)),
        "--trusted-root", str(ca.root.certificate_path),
    )  # fmt: skip
    assert code == 1
    assert_refused(
        agent,
        view,
        "the package signature (the repository's Test.Ext__1.0.0.zip.sig) does not chain to"
        " a trusted root (unable to get local issuer certificate)",
    )


def test_tampered_package_is_refused(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    signature = signed.with_name(signed.name + ".sig").read_bytes()
    packages.build("Test.Ext", entry=SIGNING_INFO, actions={"enable": "echo changed"})
    signed.with_name(signed.name + ".sig").write_bytes(signature)
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 1
    assert_refused(
        agent,
        view,
        "the package does not match its signature (the repository's Test.Ext__1.0.0.zip.sig):"
        " it was changed after it was signed, or the signature is of another file"
        " (verification failure)",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"signingInfo": {"type": "Ext", "publisher": "Other", "version": "1.0.0"}},
            "the signed package's signingInfo does not match the extension: publisher is"
            " 'Other', not 'Test'",
        ),
        (
            {"signingInfo": {"type": "Ext", "publisher": "Test", "version": "2.0"}},
            "the signed package's signingInfo does not match the extension: version is"
            " '2.0', not '1.0.0'",
        ),
        (
            {"signingInfo": {"type": 1, "publisher": "Test"}},
            "the signed package's signingInfo does not match the extension: type is None,"
            " not 'Ext'; version is None, not '1.0.0'",
        ),
        ({}, "the signed package's HandlerManifest.json has no signingInfo"),
    ],
)
def test_mismatched_signing_info_is_refused(
    agent: Agent,
    packages: Packages,
    ca: SigningCA,
    tmp_path: Path,
    entry: dict[str, Any],
    message: str,
) -> None:
    ca.sign_package(packages.build("Test.Ext", entry=entry))
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 1
    assert_refused(agent, view, message)


def test_no_trusted_root_refuses_a_required_signature(
    agent: Agent, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    code, view = agent.apply(goal(extension("a")), "--policy", str(policy(tmp_path)))
    assert code == 1
    assert_refused(
        agent,
        view,
        "the package signature (the repository's Test.Ext__1.0.0.zip.sig) cannot be"
        " verified: no trusted root is configured (--trusted-root)",
    )


def test_refusal_stands_until_the_package_changes(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    package = packages.build("Test.Ext", entry=SIGNING_INFO)
    code, view = apply_signed(agent, ca, tmp_path)
    first = status_of(view, "a")["message"]
    code, view = apply_signed(agent, ca, tmp_path)
    assert status_of(view, "a")["message"] == first
    ca.sign_package(package)  # the publisher signs it: tried again, and accepted
    code, view = apply_signed(agent, ca, tmp_path)
    assert code == 0, view


def test_signature_not_required_is_still_verified_and_warned_about(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    ca.sign_package(packages.build("Test.Ext", entry=SIGNING_INFO), ca.stranger)
    code, view = agent.apply(
        goal(extension("a")),
        "--policy", str(policy(tmp_path, required=False)),
        "--trusted-root", str(ca.root.certificate_path),
    )  # fmt: skip
    assert code == 0
    assert status_of(view, "a")["code"] == "ProvisioningState/succeeded"
    (warning,) = view_of(view, "a")["substatuses"]
    assert warning["code"] == "ComponentStatus/PackageSignature/succeeded"
    assert warning["level"] == "Warning"
    assert warning["message"] == (
        "the package signature (the repository's Test.Ext__1.0.0.zip.sig) does not chain to a"
        " trusted root (unable to get local issuer certificate) (a signature is not"
        " required: the package was used)"
    )
    assert [op.op for op in agent.ops()] == ["install", "enable"]
    # The warning stays with the extension at the next pass (nothing fetched then).
    code, view = agent.apply(
        goal(extension("a", settings={"n": 1})),
        "--policy", str(policy(tmp_path, required=False)),
    )  # fmt: skip
    assert view_of(view, "a")["substatuses"] == [warning]


def test_unsigned_package_without_requirement_shows_nothing(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    code, view = apply_signed(agent, ca, tmp_path, required=False)
    assert code == 0
    assert view_of(view, "a")["substatuses"] == []


def test_per_extension_requirement_overrides_the_global_one(
    agent: Agent, packages: Packages, ca: SigningCA, tmp_path: Path
) -> None:
    packages.build("Test.Ext")
    document = {
        "policyVersion": "0.1.0",
        "extensionPolicies": {
            "signatureRequired": True,
            "extensions": {"test.ext": {"signatureRequired": False}},
        },
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(document))
    code, view = agent.apply(goal(extension("a")), "--policy", str(path))
    assert code == 0, view


# -- through the API ----------------------------------------------------------------------


class Telemetry:
    def __init__(self) -> None:
        self.events: list[TelemetryEvent] = []

    @hookimpl
    def exthandler_telemetry_events(self, handler: str, events: list[TelemetryEvent]) -> None:
        self.events += [e for e in events if e.task_name == SIGNATURE_TASK]


def test_api_refuses_and_reports_each_verification(
    tmp_path: Path, packages: Packages, ca: SigningCA
) -> None:
    package = packages.build("Test.Ext", entry=SIGNING_INFO)
    ca.sign_package(package, ca.stranger)
    telemetry = Telemetry()
    the_goal = load_goal_state(json.dumps(goal(extension("a"))).encode())

    async def main() -> dict[str, Any]:
        config = RuntimeConfig(
            state_dir=tmp_path / "state",
            repositories=[packages.repo],
            load_entry_points=False,
            plugins=[telemetry],
            policy=policy(tmp_path),
            trusted_roots=[ca.root.certificate_path],
        )
        async with open_runtime(config) as runtime:
            return (await runtime.apply(the_goal)).to_json()

    view = anyio.run(main)
    assert status_of(view, "a")["message"].startswith(
        "Test.Ext 1.0.0: the package signature (the repository's Test.Ext__1.0.0.zip.sig)"
        " does not chain to a trusted root"
    )
    (event,) = telemetry.events
    assert event.handler == "Test.Ext"
    assert event.version == "1.0.0"
    assert event.event_level == "Error"
    assert event.message.startswith("failure: the package signature")
    assert "duration_ms=" in event.message
    ca.sign_package(package)
    view = anyio.run(main)
    assert status_of(view, "a")["code"] == "ProvisioningState/succeeded"
    assert [e.event_level for e in telemetry.events] == ["Error", "Informational"]
    assert telemetry.events[1].message.startswith("success: signature verified")


def test_a_verified_package_is_not_verified_again(ca: SigningCA, tmp_path: Path) -> None:
    package = tmp_path / "Test.Ext__1.0.0.zip"
    with zipfile.ZipFile(package, "w") as archive:
        commands = {f"{op}Command": "run.sh" for op in ("install", "enable", "disable")}
        body = {**commands, "uninstallCommand": "run.sh"}
        manifest = [{"name": "Test.Ext", "handlerManifest": body, **SIGNING_INFO}]
        archive.writestr("HandlerManifest.json", json.dumps(manifest))
    signature = base64.b64encode(ca.signature(package.read_bytes())).decode()
    events: list[TelemetryEvent] = []
    verifier = PackageVerifier(roots=[ca.root.certificate_path], emit=events.append, log=print)
    check = SignatureCheck(
        handler=HandlerName.parse("Test.Ext"),
        version=Version.parse("1.0.0"),
        encoded_signature=signature,
        required=True,
    )

    async def verify() -> None:
        outcome = CheckOutcome()
        await verifier.check(package, None, check, outcome)
        assert outcome.done
        assert outcome.warning is None

    anyio.run(verify)
    anyio.run(verify)
    assert verifier.verifications == 1
    assert len(events) == 1
    # Other roots: verified afresh.
    verifier.roots = [ca.root.certificate_path, ca.other_root.certificate_path]
    anyio.run(verify)
    assert verifier.verifications == 2


def test_goal_state_formats_carry_the_signature() -> None:
    xml = """<?xml version="1.0" encoding="utf-8"?>
<Extensions>
  <Plugins>
    <Plugin name="Test.Ext" version="1.0" state="enabled" encodedSignature="QUJD" />
  </Plugins>
</Extensions>"""
    assert load_goal_state(xml.encode()).extensions[0].encoded_signature == "QUJD"
    vm = {
        "extensionGoalStates": [
            {"name": "Test.Ext", "version": "1.0", "state": "enabled", "encodedSignature": "QUJD"}
        ]
    }
    assert load_goal_state(json.dumps(vm).encode()).extensions[0].encoded_signature == "QUJD"
    native = goal(extension("a", encodedSignature="QU JD\n"))
    assert load_goal_state(json.dumps(native).encode()).extensions[0].encoded_signature == "QUJD"


# -- publishers sign with the SDK -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
FLAGGED = "tests.sdk.packaged_handlers:Flagged"


def test_sdk_package_command_signs_and_the_runtime_accepts_it(
    agent: Agent, ca: SigningCA, tmp_path: Path
) -> None:
    import sys

    completed = subprocess.run(
        [
            sys.executable, "-m", "exthandler_sdk", "package", FLAGGED, "--out", str(agent.repo),
            "--sign-key", str(ca.leaf.key_path), "--sign-cert", str(ca.leaf.certificate_path),
            "--chain", str(ca.chain_path),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    package = agent.repo / "Contoso.Testing.Flagged__2.1.zip"
    with zipfile.ZipFile(package) as archive:
        (entry,) = json.loads(archive.read("HandlerManifest.json"))
    assert entry["signingInfo"] == {
        "type": "Flagged",
        "publisher": "Contoso.Testing",
        "version": "2.1",
    }
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(package.with_name(package.name + ".sig").read_text()))
    assert reference_accepts(der, package, ca.root.certificate_path)
    _code, view = agent.apply(
        goal(extension("f", "Contoso.Testing.Flagged", "2.1")),
        "--policy", str(policy(tmp_path)),
        "--trusted-root", str(ca.root.certificate_path),
    )  # fmt: skip
    assert "1004" not in status_of(view, "f")["code"], view
    assert (agent.state / "Contoso.Testing.Flagged-2.1").is_dir()


def test_sdk_package_command_refuses_bad_signing_options(
    ca: SigningCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exthandler_sdk._package import main_package

    with pytest.raises(SystemExit):
        main_package([FLAGGED, "--out", str(tmp_path), "--sign-key", str(ca.leaf.key_path)])
    assert "--sign-key and --sign-cert go together" in capsys.readouterr().err
    code = main_package(
        [
            FLAGGED, "--out", str(tmp_path), "--sign-key", str(ca.leaf.key_path),
            "--sign-cert", str(ca.root.certificate_path),
        ]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {ca.root.certificate_path}: is not the certificate of the key {ca.leaf.key_path}\n"
    )
    assert not list(tmp_path.iterdir())
    # Unsigned builds leave no signature of an earlier signed build behind.
    stale = tmp_path / "Contoso.Testing.Flagged__2.1.zip.sig"
    stale.write_text("old")
    assert main_package([FLAGGED, "--out", str(tmp_path)]) == 0
    assert not stale.exists()


def test_a_trusted_root_others_can_write_is_not_used(
    agent: Agent, ca: SigningCA, tmp_path: Path, signed: Path
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root.certificate_path.read_bytes())
    root.chmod(0o664)
    code, view = agent.apply(
        goal(extension("a")), "--policy", str(policy(tmp_path)), "--trusted-root", str(root)
    )
    assert code == 1
    assert status_of(view, "a")["message"] == (
        f"Test.Ext 1.0.0: a trusted root cannot be read: {root}: writable by other users (mode 664)"
    )
    assert agent.ops() == []
