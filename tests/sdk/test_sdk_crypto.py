"""Decrypting protected settings: with cryptography and with the openssl fallback."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from exthandler_sdk._crypto import (
    ProtectedSettingsError,
    decrypt_protected_settings,
    find_certificate,
)

from exthandler._state.crypto import encrypt_protected_settings, ensure_certificate

SECRET = {"token": "s3cret-value", "n": 1}


def _openssl_encrypt(lib: Path, cipher: str) -> tuple[str, str]:
    certificate = ensure_certificate(lib)
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            f"-{cipher}",
            str(certificate.certificate_path),
        ],
        input=json.dumps(SECRET).encode(),
        capture_output=True,
        check=True,
    )
    return base64.b64encode(result.stdout).decode(), certificate.thumbprint


@pytest.mark.parametrize("use_library", [True, False])
def test_runtime_encrypted(tmp_path: Path, use_library: bool) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    thumbprint = certificate.thumbprint.lower()  # names match whatever the case
    assert decrypt_protected_settings(data, tmp_path, thumbprint, use_library=use_library) == (
        SECRET
    )


@pytest.mark.parametrize("cipher", ["aes256", "des3", "aes192"])
@pytest.mark.parametrize("use_library", [True, False])
def test_openssl_encrypted(tmp_path: Path, cipher: str, use_library: bool) -> None:
    data, thumbprint = _openssl_encrypt(tmp_path, cipher)
    wrapped = "\n".join(data[i : i + 64] for i in range(0, len(data), 64))
    assert decrypt_protected_settings(wrapped, tmp_path, thumbprint, use_library=use_library) == (
        SECRET
    )


def test_certificate_files_matched_case_insensitively(tmp_path: Path) -> None:
    certificate = ensure_certificate(tmp_path)
    lower = tmp_path / f"{certificate.thumbprint.lower()}.crt"
    certificate.certificate_path.rename(lower)
    assert find_certificate(tmp_path, certificate.thumbprint) == (lower, certificate.key_path)


def _message_chain(error: BaseException) -> str:
    parts = []
    current: BaseException | None = error
    while current is not None:
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("plaintext", [b"[1, 2]", b"not json s3cret", b"\xff\xfe s3cret"])
@pytest.mark.parametrize("use_library", [True, False])
def test_errors_never_show_plaintext(tmp_path: Path, plaintext: bytes, use_library: bool) -> None:
    certificate = ensure_certificate(tmp_path)
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-aes256",
            str(certificate.certificate_path),
        ],
        input=plaintext,
        capture_output=True,
        check=True,
    )
    data = base64.b64encode(result.stdout).decode()
    with pytest.raises(ProtectedSettingsError) as caught:
        decrypt_protected_settings(data, tmp_path, certificate.thumbprint, use_library=use_library)
    assert "s3cret" not in _message_chain(caught.value)
    assert "[1, 2]" not in _message_chain(caught.value)


@pytest.mark.parametrize(
    ("data", "thumbprint", "message"),
    [
        ("AAAA", "nothex", "not a SHA-1 thumbprint"),
        ("AAAA", "A" * 40, "no certificate for thumbprint"),
        ("!!notbase64!!", None, "not valid base64"),
        ("", None, "empty"),
        ("AAAAAAAA", None, "openssl cms -decrypt"),
    ],
)
def test_decryption_errors(tmp_path: Path, data: str, thumbprint: str | None, message: str) -> None:
    certificate = ensure_certificate(tmp_path)
    with pytest.raises(ProtectedSettingsError, match=message):
        decrypt_protected_settings(data, tmp_path, thumbprint or certificate.thumbprint)


def test_missing_lib_dir(tmp_path: Path) -> None:
    with pytest.raises(ProtectedSettingsError, match="cannot list"):
        find_certificate(tmp_path / "missing", "A" * 40)


def test_no_openssl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ProtectedSettingsError, match="no openssl"):
        decrypt_protected_settings(data, tmp_path, certificate.thumbprint, use_library=False)


@pytest.mark.parametrize(
    ("use_library", "message"),
    [(True, "not a readable unencrypted PEM"), (False, "openssl cms -decrypt failed")],
)
def test_unloadable_key_is_reported_without_quoting_it(
    tmp_path: Path, use_library: bool, message: str
) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    certificate.key_path.write_text("-----BEGIN PRIVATE KEY-----\ns3cret-key-material\n")
    with pytest.raises(ProtectedSettingsError, match=message) as caught:
        decrypt_protected_settings(data, tmp_path, certificate.thumbprint, use_library=use_library)
    assert "s3cret" not in _message_chain(caught.value)
    assert caught.value.thumbprint == certificate.thumbprint


def test_key_must_be_rsa(tmp_path: Path) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ProtectedSettingsError, match="is not RSA"):
        decrypt_protected_settings(data, tmp_path, certificate.thumbprint)


@pytest.mark.parametrize("thumbprint", ["../etc/passwd", "s3cret-pasted-here", "a" * 41])
def test_thumbprint_is_refused_without_quoting_it(tmp_path: Path, thumbprint: str) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    with pytest.raises(ProtectedSettingsError, match="not a SHA-1 thumbprint") as caught:
        decrypt_protected_settings(data, tmp_path, thumbprint)
    assert thumbprint not in _message_chain(caught.value)
    assert caught.value.thumbprint is None


def test_unreadable_certificate(tmp_path: Path) -> None:
    certificate = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SECRET, certificate)
    certificate.certificate_path.unlink()
    certificate.certificate_path.mkdir()
    with pytest.raises(ProtectedSettingsError, match="cannot read"):
        decrypt_protected_settings(data, tmp_path, certificate.thumbprint)
