"""Protected settings: the runtime's certificate, and CMS enveloped data addressed to it.

Protected settings travel as a JSON object encrypted to a certificate (PKCS#7/CMS
EnvelopedData, RSA key transport with PKCS#1 v1.5, AES content cipher, DER, base64), and
extensions decrypt them with the `<THUMBPRINT>.crt`/`.prv` pair in the parent of their
handler dir (docs/protocol.md#on-disk). Decryption lives in the SDK alone; this module
keeps the pair and encrypts. The plaintext only ever lives in memory, and no error raised
here carries it (or key material).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from exthandler_sdk import ExtHandlerError
from exthandler_sdk.protocol import THUMBPRINT_PATTERN, certificate_file_names

from .._fs import write_atomic
from .._values import Value

__all__ = [
    "Certificate",
    "ProtectedSettingsError",
    "encrypt_protected_settings",
    "ensure_certificate",
    "thumbprint_of",
]

MARKER_NAME = "exthandler-certificate"
"""The file in the lib dir that names the runtime's current certificate by thumbprint."""

_THUMBPRINT = re.compile(THUMBPRINT_PATTERN)
_KEY_BITS = 2048
_VALIDITY = datetime.timedelta(days=3650)
_BACKDATE = datetime.timedelta(days=1)  # tolerate a guest clock somewhat behind ours


class ProtectedSettingsError(ExtHandlerError, ValueError):
    """A certificate could not be read, or protected settings could not be encrypted to it.

    `thumbprint` names the certificate involved, when there is one. The message never
    contains the plaintext or key material.
    """

    def __init__(self, message: str, *, thumbprint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.thumbprint = thumbprint


class Certificate(Value):
    """A certificate/key pair in the lib dir, named by the certificate's SHA-1 thumbprint."""

    thumbprint: str
    """SHA-1 of the DER certificate, upper-case hex (40 characters)."""
    certificate_path: Path
    """`<lib>/<THUMBPRINT>.crt`, PEM."""
    key_path: Path
    """`<lib>/<THUMBPRINT>.prv`, PEM, unencrypted PKCS#8 (what extensions expect)."""


def thumbprint_of(certificate_pem: bytes) -> str:
    """The SHA-1 thumbprint (upper-case hex) of a PEM certificate, as the protocol names it."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as exc:
        raise ProtectedSettingsError(f"not a PEM certificate: {exc}") from None
    return _thumbprint(cert)


def _thumbprint(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _paths(lib_dir: Path, thumbprint: str) -> Certificate:
    certificate, key = certificate_file_names(thumbprint)
    return Certificate(
        thumbprint=thumbprint, certificate_path=lib_dir / certificate, key_path=lib_dir / key
    )


def ensure_certificate(lib_dir: Path) -> Certificate:
    """The runtime's own certificate in `lib_dir`, created on first use.

    The certificate named by `<lib_dir>/exthandler-certificate` is reused when its `.crt`
    and `.prv` exist, the `.crt` has that thumbprint and the `.prv` is its key; otherwise a
    new self-signed RSA certificate is written (key first, marker last, all atomically, so
    a crash or a concurrent caller never leaves a marker naming a missing pair). Older
    pairs are left in place: settings encrypted to them may still be on disk.
    """
    recorded = _recorded_certificate(lib_dir)
    if recorded is not None:
        return recorded
    lib_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    cert = _self_signed(key)
    certificate = _paths(lib_dir, _thumbprint(cert))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(certificate.key_path, key_pem, mode=0o600)
    write_atomic(
        certificate.certificate_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o600
    )
    write_atomic(lib_dir / MARKER_NAME, f"{certificate.thumbprint}\n".encode(), mode=0o644)
    return certificate


def _recorded_certificate(lib_dir: Path) -> Certificate | None:
    """The pair the marker names, if it is intact; None for anything missing or amiss."""
    try:
        thumbprint = (lib_dir / MARKER_NAME).read_text(encoding="ascii").strip().upper()
    except (OSError, UnicodeDecodeError):
        return None
    if not _THUMBPRINT.fullmatch(thumbprint):
        return None
    certificate = _paths(lib_dir, thumbprint)
    try:
        cert = x509.load_pem_x509_certificate(certificate.certificate_path.read_bytes())
        key = serialization.load_pem_private_key(certificate.key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if (
        _thumbprint(cert) != thumbprint
        or not isinstance(key, rsa.RSAPrivateKey)
        or key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki)
    ):
        return None
    return certificate


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exthandler")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def encrypt_protected_settings(settings: Mapping[str, Any], certificate: Certificate) -> str:
    """`settings` as JSON, enveloped to `certificate`, DER, base64 (one line).

    RSA PKCS#1 v1.5 key transport to an issuer-and-serial recipient with an AES-256-CBC
    content cipher: plain PKCS#7 that both `openssl cms -decrypt` and the older
    `openssl smime -decrypt` accept.
    """
    try:
        plaintext = json.dumps(dict(settings)).encode()
    except (TypeError, ValueError) as exc:
        # The message names a type or a circular reference, never a value.
        raise ProtectedSettingsError(
            f"protected settings are not JSON-serialisable: {exc}",
            thumbprint=certificate.thumbprint,
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(certificate.certificate_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProtectedSettingsError(
            f"cannot read certificate {certificate.certificate_path}: {exc}",
            thumbprint=certificate.thumbprint,
        ) from exc
    try:
        der = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(plaintext)
            .add_recipient(cert)
            .set_content_encryption_algorithm(algorithms.AES256)
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        raise ProtectedSettingsError(
            f"cannot encrypt to certificate {certificate.thumbprint}: {exc}",
            thumbprint=certificate.thumbprint,
        ) from None
    return base64.b64encode(der).decode("ascii")
