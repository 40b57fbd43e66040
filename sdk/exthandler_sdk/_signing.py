"""Signing handler packages (docs/policy.md): a CMS detached signature over the zip's
bytes, written beside it as `Publisher.Type__Version.zip.sig` (base64 of the DER), which a
runtime verifies against the roots it trusts. Needs the `cryptography` package (the
SDK's `crypto` extra)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ._errors import ExtHandlerError
from .protocol import SIGNATURE_SUFFIX

__all__ = ["Signer", "SigningError", "load_signer", "sign_detached", "write_signature"]


class SigningError(ExtHandlerError, ValueError):
    """A key, certificate or chain that cannot sign (unreadable, mismatched, ...)."""


@attrs.frozen(kw_only=True)
class Signer:
    """A private key, its certificate, and the intermediate certificates between that
    certificate and the root a runtime trusts (carried in each signature)."""

    key: Any
    certificate: Any
    chain: Sequence[Any] = ()


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise SigningError(
            "signing needs the cryptography package (pip install 'exthandler-sdk[crypto]')"
        ) from None
    return x509


def load_signer(key: Path, certificate: Path, chain: Path | None = None) -> Signer:
    """Read a PEM private key (unencrypted), its PEM certificate and an optional PEM file
    of intermediate certificates; SigningError naming the file that is wrong."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SigningError(f"{path}: cannot be read: {exc.strerror or exc}") from None

    try:
        private = serialization.load_pem_private_key(read(key), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningError(f"{key}: an RSA or EC key is needed to sign")
    try:
        cert = x509.load_pem_x509_certificate(read(certificate))
    except ValueError as exc:
        raise SigningError(f"{certificate}: not a PEM certificate ({exc})") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != private.public_key().public_bytes(
        encoding, public
    ):
        raise SigningError(f"{certificate}: is not the certificate of the key {key}")
    intermediates: list[Any] = []
    if chain is not None:
        try:
            intermediates = list(x509.load_pem_x509_certificates(read(chain)))
        except ValueError as exc:
            raise SigningError(f"{chain}: not PEM certificates ({exc})") from None
    return Signer(key=private, certificate=cert, chain=tuple(intermediates))


def sign_detached(data: bytes, signer: Signer) -> bytes:
    """The DER CMS signed-data of `data` (detached: without `data` itself), by `signer`,
    with SHA-256, carrying the signer's certificate and chain."""
    _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    builder = builder.add_signer(signer.certificate, signer.key, hashes.SHA256())
    for cert in signer.chain:
        builder = builder.add_certificate(cert)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    signed: bytes = builder.sign(serialization.Encoding.DER, options)
    return signed


def write_signature(package: Path, signer: Signer) -> Path:
    """Sign the zip at `package` and write `<package>.sig` (base64 of the DER signature,
    one line); return its path."""
    signature = sign_detached(package.read_bytes(), signer)
    path = package.with_name(package.name + SIGNATURE_SUFFIX)
    path.write_text(base64.b64encode(signature).decode("ascii") + "\n")
    return path
