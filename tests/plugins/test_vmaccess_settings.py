"""VM Access's settings, SSH keys and sudoers lines: checked without touching the machine."""

from __future__ import annotations

import base64
import datetime
import re
import struct
from pathlib import Path
from typing import Any

import exthandler_plugins
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from exthandler_plugins.vmaccess import VMAccess, VMAccessProtectedSettings, VMAccessSettings
from exthandler_plugins.vmaccess._settings import resolve
from exthandler_plugins.vmaccess._sshkey import key_identity, parse_ssh_key
from exthandler_plugins.vmaccess._sudoers import check_lines, grant_line
from exthandler_sdk import SettingsError

from exthandler._model import HandlerName
from exthandler._packages.builtin import missing_handler_hint
from exthandler._plugins import load_object
from exthandler.testing import Agent

SECRET = "Pa55:word with spaces"
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def openssh(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def certificate(key: PrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmaccess test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def refused(**protected: Any) -> list[str]:
    public = protected.pop("public", None)
    with pytest.raises(SettingsError) as caught:
        resolve(public, VMAccessProtectedSettings(**protected))
    assert caught.value.code == 53
    assert SECRET not in caught.value.message
    return list(caught.value.errors)


def test_registered_through_the_entry_point_hook() -> None:
    paths = exthandler_plugins.exthandler_handler_paths()
    assert load_object(paths[VMAccess.name]) is VMAccess
    assert VMAccess.name == "Microsoft.OSTCExtensions.VMAccessForLinux"
    assert VMAccess.version.startswith("1.5.")
    hint = missing_handler_hint(HandlerName.parse("Microsoft.OSTCExtensions.VMAccessForLinux"))
    assert (
        hint
        == '; it is a built-in handler of exthandler-plugins: pip install "exthandler[plugins]"'
    )


def test_a_complete_plan_hides_the_password() -> None:
    key = openssh(ed25519.Ed25519PrivateKey.generate())
    plan = resolve(
        VMAccessSettings(),
        VMAccessProtectedSettings(
            username="alice",
            password=SECRET,
            ssh_key=key + "  me@host  ",
            expiration="2031-02-03",
            remove_user="old_admin",
            reset_ssh=True,
        ),
    )
    assert plan.username == "alice"
    assert plan.password == SECRET
    assert plan.key is not None
    assert plan.key.line == key + " me@host"
    assert plan.expiration == datetime.date(2031, 2, 3)
    assert (plan.remove_user, plan.reset_ssh) == ("old_admin", True)
    assert SECRET not in repr(plan)
    assert SECRET not in repr(VMAccessProtectedSettings(password=SECRET))


def test_every_bad_field_by_path() -> None:
    errors = refused(
        username="Bad User",
        password="two\nlines",
        ssh_key="ssh-rsa not-base64!",
        expiration="2031-02-30",
        remove_user="-rf",
        public=VMAccessSettings(password=SECRET, username="alice"),
    )
    assert errors == [
        "settings.username: VM Access reads its settings from the protected settings only; "
        "move it there",
        "settings.password: VM Access reads its settings from the protected settings only; "
        "move it there",
        "protectedSettings.username: not a valid user name (1 to 32 characters: lowercase "
        "letters, digits, '_', '.' and '-', starting with a letter or '_')",
        "protectedSettings.remove_user: not a valid user name (1 to 32 characters: lowercase "
        "letters, digits, '_', '.' and '-', starting with a letter or '_')",
        "protectedSettings.password: must not hold a line break or a NUL",
        "protectedSettings.ssh_key: the key data is not base64",
        "protectedSettings.expiration: expected a date as YYYY-MM-DD, got '2031-02-30'",
    ]


@pytest.mark.parametrize(
    ("protected", "expected"),
    [
        (
            {},
            "protectedSettings: nothing to do: give username (with password, ssh_key or "
            "expiration), remove_user or reset_ssh",
        ),
        ({"reset_ssh": False}, "protectedSettings: nothing to do"),
        ({"password": SECRET}, "protectedSettings.password: needs username (the user it is for)"),
        ({"expiration": "2030-01-01"}, "protectedSettings.expiration: needs username"),
        (
            {"username": "alice"},
            "protectedSettings.username: give password, ssh_key or expiration with it",
        ),
        (
            {"username": "alice", "password": SECRET, "remove_user": "alice"},
            "protectedSettings.remove_user: the same user as username",
        ),
        ({"username": "alice", "password": ""}, "protectedSettings.password: must not be empty"),
        ({"username": "a" * 33, "password": SECRET}, "protectedSettings.username: not a valid"),
        (
            {"username": "alice", "expiration": "soon"},
            "protectedSettings.expiration: expected a date as YYYY-MM-DD",
        ),
    ],
)
def test_what_is_refused(protected: dict[str, Any], expected: str) -> None:
    errors = refused(**protected)
    assert len(errors) == 1
    assert errors[0].startswith(expected)


def test_types_are_checked_by_the_sdk_with_paths(exthandler_agent: Agent) -> None:
    exthandler_agent.add_handler(VMAccess)
    view = exthandler_agent.apply(
        {
            "extensions": [
                {
                    "name": "vmaccess",
                    "publisher": "Microsoft.OSTCExtensions",
                    "type": "VMAccessForLinux",
                    "typeHandlerVersion": "1.5",
                    "settings": {"password": SECRET},
                    "protectedSettings": {"username": 7, "reset_ssh": "maybe"},
                }
            ]
        }
    )
    status = view.extensions[0].statuses[0]
    assert status.code == "ProvisioningState/failed/53"
    assert "protectedSettings.username: invalid value for type, expected str" in status.message
    assert "protectedSettings.reset_ssh: invalid value for type, expected bool" in status.message
    assert SECRET not in status.message


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP521R1()),
    ],
    ids=["rsa", "ed25519", "p256", "p384", "p521"],
)
def test_certificates_and_pem_keys_become_openssh_keys(key: PrivateKey) -> None:
    expected = openssh(key)
    assert parse_ssh_key(certificate(key)).line == expected
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_ssh_key(pem.decode()).line == expected
    assert parse_ssh_key(expected + " a  comment ").line == expected + " a comment"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "must not be empty"),
        ("x" * 20000, "longer than 16384 characters"),
        ("ssh-foo AAAA", "unknown key type 'ssh-foo'"),
        ('command="ls" ssh-ed25519 AAAA', "options before the key type are not accepted"),
        ("ssh-ed25519", "the ssh-ed25519 key has no base64 data"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "the base64 data is not a ssh-ed25519 key"),
        ("ssh-ed25519 AAAA\nssh-rsa AAAA", "an OpenSSH public key is a single line"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 \x1b[31m", "may hold only printable ASCII"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PUBLIC KEY-----", "one certificate"),
        ("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----", "not a usable"),
        ("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----", "one certificate"),
    ],
)
def test_bad_keys(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        parse_ssh_key(text)


def test_an_unsupported_curve_is_named() -> None:
    pem = (
        ec.generate_private_key(ec.SECP224R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="other than P-256, P-384 or P-521"):
        parse_ssh_key(pem.decode())


def test_openssh_certificates_are_accepted() -> None:
    kind = b"ssh-ed25519-cert-v01@openssh.com"
    blob = base64.b64encode(struct.pack(">I", len(kind)) + kind + b"\0" * 8).decode()
    key = parse_ssh_key(f"ssh-ed25519-cert-v01@openssh.com {blob}")
    assert key.kind == "ssh-ed25519-cert-v01@openssh.com"


def test_key_identity_ignores_options_and_comments() -> None:
    assert key_identity("ssh-ed25519 AAAA me") == ("ssh-ed25519", "AAAA")
    assert key_identity('from="10.0.0.1",no-pty ssh-ed25519 AAAA other') == (
        "ssh-ed25519",
        "AAAA",
    )
    assert key_identity("# ssh-ed25519") is None
    assert key_identity("") is None


def test_sudoers_lines() -> None:
    assert grant_line("alice", nopasswd=False) == "alice ALL=(ALL) ALL"
    assert grant_line("bob", nopasswd=True) == "bob ALL=(ALL) NOPASSWD: ALL"
    assert check_lines("# c\n\nalice ALL=(ALL) ALL\nbob ALL=(ALL) NOPASSWD: ALL\n") == []
    assert check_lines("#includedir /etc\n@include x\nalice ALL=(ALL)  ALL\n") == [
        "line 1: not a line this handler writes ('#includedir /etc')",
        "line 2: not a line this handler writes ('@include x')",
        "line 3: not a line this handler writes ('alice ALL=(ALL)  ALL')",
    ]


def test_the_error_shown_in_the_docs() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "vmaccess.md").read_text()
    shown = re.search(r"```\n(invalid settings:\n.*?)\n```", doc, re.DOTALL)
    assert shown is not None
    with pytest.raises(SettingsError) as caught:
        resolve(
            VMAccessSettings(password=SECRET),
            VMAccessProtectedSettings(
                username="Bad User", password=SECRET, expiration="2031-02-30"
            ),
        )
    assert caught.value.message == shown[1]
