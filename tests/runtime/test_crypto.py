"""Protected settings cryptography, checked against the real openssl binary."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from exthandler_sdk import ExtHandlerError
from exthandler_sdk import _crypto as sdk_crypto
from exthandler_sdk._crypto import decrypt_protected_settings

from exthandler._state.crypto import (
    Certificate,
    ProtectedSettingsError,
    encrypt_protected_settings,
    ensure_certificate,
    thumbprint_of,
)

DecryptionError = sdk_crypto.ProtectedSettingsError

OPENSSL = "/usr/bin/openssl"
SECRET = "zq-SECRET-7f3a9c-do-not-leak"
SETTINGS: dict[str, Any] = {
    "commandToExecute": f"echo {SECRET}",
    "storageAccountKey": SECRET,
    "nested": {"list": [1, 2.5, None, True], "unicode": "żółw ✓"},
}


def openssl(*args: str, stdin: bytes = b"") -> bytes:
    """Run the real openssl binary; fail the test with its stderr if it fails."""
    result = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def openssl_encrypt(plaintext: bytes, certificate: Certificate, cipher: str = "-aes256") -> str:
    """Enveloped data as another agent would make it, base64 as it appears in settings."""
    der = openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        cipher,
        str(certificate.certificate_path),
        stdin=plaintext,
    )
    return base64.b64encode(der).decode()


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `directory` with its inode, mtime and content."""
    return {
        str(path.relative_to(directory)): (
            path.stat().st_ino,
            path.stat().st_mtime_ns,
            path.read_bytes(),
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def error_texts(error: BaseException) -> str:
    """The message and repr of an error and of everything chained to it."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.fixture(scope="module")
def shared_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lib dir with the runtime's certificate, for tests that only read it."""
    lib = tmp_path_factory.mktemp("lib")
    ensure_certificate(lib)
    return lib


@pytest.fixture
def cert(shared_lib: Path) -> Certificate:
    return ensure_certificate(shared_lib)


# -- the runtime's certificate ---------------------------------------------------------------


def test_ensure_certificate_creates_a_pair_named_by_thumbprint(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    certificate = ensure_certificate(lib)

    fingerprint = openssl(
        "x509", "-fingerprint", "-sha1", "-noout", "-in", str(certificate.certificate_path)
    )
    expected = fingerprint.decode().strip().partition("=")[2].replace(":", "")
    assert certificate.thumbprint == expected == expected.upper()
    assert len(certificate.thumbprint) == 40
    assert certificate.certificate_path == lib / f"{expected}.crt"
    assert certificate.key_path == lib / f"{expected}.prv"
    for path in (certificate.certificate_path, certificate.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (lib / "exthandler-certificate").read_text().strip() == certificate.thumbprint
    assert sorted(p.name for p in lib.iterdir()) == sorted(
        [f"{expected}.crt", f"{expected}.prv", "exthandler-certificate"]
    )
    assert thumbprint_of(certificate.certificate_path.read_bytes()) == certificate.thumbprint


def test_certificate_and_key_are_what_extensions_expect(cert: Certificate) -> None:
    key_pem = cert.key_path.read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048

    loaded = x509.load_pem_x509_certificate(cert.certificate_path.read_bytes())
    assert loaded.subject.rfc4514_string() == "CN=exthandler"
    assert loaded.issuer == loaded.subject
    lifetime = loaded.not_valid_after_utc - loaded.not_valid_before_utc
    assert datetime.timedelta(days=3640) < lifetime < datetime.timedelta(days=3660)
    assert loaded.not_valid_before_utc < datetime.datetime.now(datetime.UTC)
    # openssl agrees that the key belongs to the certificate.
    cert_modulus = openssl("x509", "-noout", "-modulus", "-in", str(cert.certificate_path))
    key_modulus = openssl("rsa", "-noout", "-modulus", "-in", str(cert.key_path))
    assert cert_modulus == key_modulus


def test_ensure_certificate_reuses_the_recorded_pair_and_writes_nothing(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path)
    before = snapshot(tmp_path)
    assert ensure_certificate(tmp_path) == first
    assert snapshot(tmp_path) == before


def test_ensure_certificate_accepts_a_lower_case_marker(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path)
    (tmp_path / "exthandler-certificate").write_text(first.thumbprint.lower())
    assert ensure_certificate(tmp_path) == first


def test_serials_are_random(tmp_path: Path) -> None:
    serials = set()
    for name in ("a", "b"):
        made = ensure_certificate(tmp_path / name)
        serials.add(
            x509.load_pem_x509_certificate(made.certificate_path.read_bytes()).serial_number
        )
    assert len(serials) == 2


def _delete_key(lib: Path, old: Certificate) -> None:
    old.key_path.unlink()


def _delete_certificate(lib: Path, old: Certificate) -> None:
    old.certificate_path.unlink()


def _delete_marker(lib: Path, old: Certificate) -> None:
    (lib / "exthandler-certificate").unlink()


def _garbage_marker(lib: Path, old: Certificate) -> None:
    (lib / "exthandler-certificate").write_text("not a thumbprint")


def _binary_marker(lib: Path, old: Certificate) -> None:
    (lib / "exthandler-certificate").write_bytes(b"\xff\xfe" * 20)


def _foreign_key(lib: Path, old: Certificate) -> None:
    other = ensure_certificate(lib / "other")
    shutil.copyfile(other.key_path, old.key_path)


def _ec_key(lib: Path, old: Certificate) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate_under_wrong_name(lib: Path, old: Certificate) -> None:
    other = ensure_certificate(lib / "other")
    shutil.copyfile(other.certificate_path, old.certificate_path)
    shutil.copyfile(other.key_path, old.key_path)


def _corrupt_certificate(lib: Path, old: Certificate) -> None:
    old.certificate_path.write_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n")


@pytest.mark.parametrize(
    "damage",
    [
        _delete_key,
        _delete_certificate,
        _delete_marker,
        _garbage_marker,
        _binary_marker,
        _foreign_key,
        _ec_key,
        _certificate_under_wrong_name,
        _corrupt_certificate,
    ],
)
def test_a_damaged_pair_is_replaced_by_a_new_certificate(
    tmp_path: Path, damage: Callable[[Path, Certificate], None]
) -> None:
    old = ensure_certificate(tmp_path)
    damage(tmp_path, old)

    new = ensure_certificate(tmp_path)

    assert new.thumbprint != old.thumbprint
    assert new.key_path.is_file()
    assert (tmp_path / "exthandler-certificate").read_text().strip() == new.thumbprint
    assert thumbprint_of(new.certificate_path.read_bytes()) == new.thumbprint
    assert ensure_certificate(tmp_path) == new
    # The new pair works end to end.
    assert (
        decrypt_protected_settings(
            encrypt_protected_settings(SETTINGS, new), tmp_path, new.thumbprint
        )
        == SETTINGS
    )


def test_thumbprint_of_rejects_non_certificates() -> None:
    with pytest.raises(ProtectedSettingsError, match="not a PEM certificate"):
        thumbprint_of(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_error_type() -> None:
    error = ProtectedSettingsError("boom", thumbprint="AB")
    assert isinstance(error, ExtHandlerError)
    assert isinstance(error, ValueError)
    assert (error.message, error.thumbprint, str(error)) == ("boom", "AB", "boom")


# -- encryption, checked by openssl ------------------------------------------------------------


@pytest.mark.parametrize("tool", ["cms", "smime"])
def test_openssl_decrypts_what_we_encrypt(cert: Certificate, tool: str) -> None:
    data = encrypt_protected_settings(SETTINGS, cert)
    assert "\n" not in data
    plaintext = openssl(
        tool,
        "-decrypt",
        "-inform",
        "DER",
        "-recip",
        str(cert.certificate_path),
        "-inkey",
        str(cert.key_path),
        stdin=base64.b64decode(data, validate=True),
    )
    assert plaintext == json.dumps(SETTINGS).encode()


def test_envelope_is_pkcs7_enveloped_data_with_rsa_and_aes(cert: Certificate) -> None:
    der = base64.b64decode(encrypt_protected_settings(SETTINGS, cert))
    dump = openssl("cms", "-cmsout", "-print", "-noout", "-inform", "DER", stdin=der).decode()
    assert "pkcs7-envelopedData" in dump
    assert "rsaEncryption" in dump
    assert "aes-256-cbc" in dump
    assert SECRET not in dump


def test_each_encryption_is_fresh(cert: Certificate) -> None:
    assert encrypt_protected_settings(SETTINGS, cert) != encrypt_protected_settings(SETTINGS, cert)


def test_encrypt_rejects_values_json_cannot_hold(cert: Certificate) -> None:
    with pytest.raises(ProtectedSettingsError, match="not JSON-serialisable") as info:
        encrypt_protected_settings({"key": SECRET, "bad": {1, 2}}, cert)
    assert SECRET not in error_texts(info.value)
    assert info.value.thumbprint == cert.thumbprint


def test_encrypt_needs_the_certificate_file(tmp_path: Path) -> None:
    missing = Certificate(
        thumbprint="0" * 40,
        certificate_path=tmp_path / "none.crt",
        key_path=tmp_path / "none.prv",
    )
    with pytest.raises(ProtectedSettingsError, match="cannot read certificate") as info:
        encrypt_protected_settings(SETTINGS, missing)
    assert SECRET not in error_texts(info.value)


def test_encrypt_needs_an_rsa_certificate(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ec")])
    now = datetime.datetime.now(datetime.UTC)
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ec.crt"
    path.write_bytes(ec_cert.public_bytes(serialization.Encoding.PEM))
    certificate = Certificate(
        thumbprint=thumbprint_of(path.read_bytes()), certificate_path=path, key_path=path
    )
    with pytest.raises(ProtectedSettingsError, match="cannot encrypt") as info:
        encrypt_protected_settings(SETTINGS, certificate)
    assert SECRET not in error_texts(info.value)


# -- decryption --------------------------------------------------------------------------------


def test_round_trip(cert: Certificate, shared_lib: Path) -> None:
    data = encrypt_protected_settings(SETTINGS, cert)
    assert decrypt_protected_settings(data, shared_lib, cert.thumbprint) == SETTINGS


def test_thumbprint_and_base64_are_matched_leniently(cert: Certificate, shared_lib: Path) -> None:
    data = encrypt_protected_settings(SETTINGS, cert)
    wrapped = "\r\n".join(data[i : i + 64] for i in range(0, len(data), 64))
    assert decrypt_protected_settings(wrapped, shared_lib, cert.thumbprint.lower()) == SETTINGS


def test_file_names_are_matched_case_insensitively(tmp_path: Path) -> None:
    made = ensure_certificate(tmp_path / "made")
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copyfile(made.certificate_path, lib / f"{made.thumbprint.lower()}.CRT")
    shutil.copyfile(made.key_path, lib / f"{made.thumbprint.lower()}.prv")
    (lib / "unrelated").write_text("x")
    data = encrypt_protected_settings(SETTINGS, made)
    assert decrypt_protected_settings(data, lib, made.thumbprint) == SETTINGS


@pytest.mark.parametrize("cipher", ["-aes256", "-aes128", "-aes192", "-des3"])
def test_decrypts_what_openssl_encrypts(cert: Certificate, shared_lib: Path, cipher: str) -> None:
    data = openssl_encrypt(json.dumps(SETTINGS).encode(), cert, cipher)
    assert decrypt_protected_settings(data, shared_lib, cert.thumbprint) == SETTINGS


def test_decrypts_openssl_smime_output(cert: Certificate, shared_lib: Path) -> None:
    der = openssl(
        "smime",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        "-aes256",
        str(cert.certificate_path),
        stdin=json.dumps(SETTINGS).encode(),
    )
    data = base64.b64encode(der).decode()
    assert decrypt_protected_settings(data, shared_lib, cert.thumbprint) == SETTINGS


@pytest.mark.parametrize(
    ("plaintext", "message"),
    [
        (json.dumps([SECRET]).encode(), "a JSON array, not an object"),
        (json.dumps(SECRET).encode(), "a JSON string, not an object"),
        (b"null", "a JSON null, not an object"),
        (f"{{'key': '{SECRET}'}}".encode(), "not UTF-8 JSON"),
        (SECRET.encode() + b"\xff\xfe", "not UTF-8 JSON"),
    ],
)
def test_plaintext_that_is_not_a_json_object(
    cert: Certificate, shared_lib: Path, plaintext: bytes, message: str
) -> None:
    data = openssl_encrypt(plaintext, cert)
    with pytest.raises(DecryptionError, match=message) as info:
        decrypt_protected_settings(data, shared_lib, cert.thumbprint)
    assert SECRET not in error_texts(info.value)
    assert info.value.thumbprint == cert.thumbprint


def test_wrong_certificate(tmp_path: Path, cert: Certificate) -> None:
    other = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match=other.thumbprint) as info:
        decrypt_protected_settings(data, tmp_path, other.thumbprint)
    assert SECRET not in error_texts(info.value)


def _not_enveloped(cert: Certificate) -> str:
    der = openssl("x509", "-outform", "DER", "-in", str(cert.certificate_path))
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    ("make_data", "message"),
    [
        (lambda cert: f"!!{SECRET}!!", "not valid base64"),
        (lambda cert: "QUJD=ZZ", "not valid base64"),
        (lambda cert: "  ", "empty"),
        (_not_enveloped, "cannot decrypt"),
        (lambda cert: base64.b64encode(SECRET.encode()).decode(), "cannot decrypt"),
    ],
)
def test_data_that_is_not_enveloped(
    cert: Certificate, shared_lib: Path, make_data: Callable[[Certificate], str], message: str
) -> None:
    with pytest.raises(DecryptionError, match=message) as info:
        decrypt_protected_settings(make_data(cert), shared_lib, cert.thumbprint)
    assert SECRET not in error_texts(info.value)


@pytest.mark.parametrize(
    ("remove", "missing"),
    [(".crt", "crt"), (".prv", "prv"), ("", "crt, ")],
)
def test_missing_files(tmp_path: Path, cert: Certificate, remove: str, missing: str) -> None:
    made = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SETTINGS, made)
    for path in (made.certificate_path, made.key_path):
        if path.suffix == remove or not remove:
            path.unlink()
    with pytest.raises(DecryptionError, match=f"missing {made.thumbprint}.{missing}"):
        decrypt_protected_settings(data, tmp_path, made.thumbprint)


@pytest.mark.parametrize("thumbprint", ["", "../etc/passwd", "G" * 40, "A" * 39, SECRET])
def test_thumbprint_must_be_sha1_hex(cert: Certificate, shared_lib: Path, thumbprint: str) -> None:
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="not a SHA-1 thumbprint") as info:
        decrypt_protected_settings(data, shared_lib, thumbprint)
    assert SECRET not in error_texts(info.value)


def test_missing_lib_dir(tmp_path: Path, cert: Certificate) -> None:
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="cannot list"):
        decrypt_protected_settings(data, tmp_path / "absent", cert.thumbprint)


def test_unreadable_certificate(tmp_path: Path, cert: Certificate) -> None:
    (tmp_path / f"{cert.thumbprint}.crt").mkdir()
    shutil.copyfile(cert.key_path, tmp_path / f"{cert.thumbprint}.prv")
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="cannot read certificate"):
        decrypt_protected_settings(data, tmp_path, cert.thumbprint)


def test_garbage_key_is_not_quoted(tmp_path: Path, cert: Certificate) -> None:
    shutil.copyfile(cert.certificate_path, tmp_path / f"{cert.thumbprint}.crt")
    (tmp_path / f"{cert.thumbprint}.prv").write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="not a readable unencrypted PEM") as info:
        decrypt_protected_settings(data, tmp_path, cert.thumbprint)
    assert SECRET not in error_texts(info.value)


def test_key_must_be_rsa(tmp_path: Path, cert: Certificate) -> None:
    shutil.copyfile(cert.certificate_path, tmp_path / f"{cert.thumbprint}.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / f"{cert.thumbprint}.prv").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="is not RSA"):
        decrypt_protected_settings(data, tmp_path, cert.thumbprint)


def test_plaintext_never_reaches_the_disk(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    certificate = ensure_certificate(lib)
    data = encrypt_protected_settings(SETTINGS, certificate)
    assert decrypt_protected_settings(data, lib, certificate.thumbprint) == SETTINGS
    ensure_certificate(lib)
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) == 3
    for path in files:
        content = path.read_bytes()
        assert SECRET.encode() not in content
        assert SECRET.encode("utf-16-le") not in content
    assert SECRET not in data
    assert SECRET.encode() not in base64.b64decode(data)


# -- the openssl fallback ----------------------------------------------------------------------


def test_fallback_when_the_library_cannot_decrypt(cert: Certificate, shared_lib: Path) -> None:
    for data in (
        encrypt_protected_settings(SETTINGS, cert),
        openssl_encrypt(json.dumps(SETTINGS).encode(), cert, "-des3"),
    ):
        assert (
            decrypt_protected_settings(data, shared_lib, cert.thumbprint, use_library=False)
            == SETTINGS
        )


def test_fallback_reports_openssl_failures(tmp_path: Path, cert: Certificate) -> None:
    other = ensure_certificate(tmp_path)
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match=r"openssl cms -decrypt failed") as info:
        decrypt_protected_settings(data, tmp_path, other.thumbprint, use_library=False)
    assert other.thumbprint in str(info.value)
    assert SECRET not in error_texts(info.value)


def fake_openssl(directory: Path, script: str) -> Path:
    """A stand-in `openssl` on PATH, for failures the real one will not produce on demand."""
    directory.mkdir()
    path = directory / "openssl"
    path.write_text(script)
    path.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("#!/bin/sh\nexit 3\n", r"failed \(exit 3\): no diagnostics"),
        ("#!/bin/sh\necho 'bad thing' >&2\nexit 1\n", r"failed \(exit 1\): bad thing"),
        ("#!/nonexistent/interpreter\n", "cannot run openssl"),
        ("#!/bin/sh\nexec /bin/sleep 5\n", "timed out"),
    ],
)
def test_fallback_with_a_broken_openssl(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    cert: Certificate,
    shared_lib: Path,
    script: str,
    message: str,
) -> None:
    monkeypatch.setattr(sdk_crypto, "_OPENSSL_TIMEOUT", 0.5)
    monkeypatch.setenv("PATH", str(fake_openssl(tmp_path / "bin", script)))
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match=message) as info:
        decrypt_protected_settings(data, shared_lib, cert.thumbprint, use_library=False)
    assert SECRET not in error_texts(info.value)


def test_fallback_without_openssl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cert: Certificate, shared_lib: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    data = encrypt_protected_settings(SETTINGS, cert)
    with pytest.raises(DecryptionError, match="no openssl binary"):
        decrypt_protected_settings(data, shared_lib, cert.thumbprint, use_library=False)


def test_files_are_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        certificate = ensure_certificate(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(certificate.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(certificate.certificate_path.stat().st_mode) == 0o600
