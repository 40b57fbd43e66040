"""Decrypting protected settings (PROTOCOL.md section 3), the way extensions do.

The data is base64 of DER PKCS#7/CMS EnvelopedData addressed to the certificate whose
SHA-1 thumbprint the settings name; the `<THUMBPRINT>.crt`/`.prv` pair lives in the parent
of the handler dir. `cryptography` decrypts when it is installed and implements the
content cipher; otherwise `openssl cms -decrypt` does (the binary every extension relies
on). No error raised here carries the plaintext or key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ._errors import ExtHandlerError
from .protocol import CERTIFICATE_KINDS, THUMBPRINT_PATTERN, certificate_file_kind

__all__ = ["ProtectedSettingsError", "decrypt_protected_settings", "find_certificate"]

_THUMBPRINT = re.compile(THUMBPRINT_PATTERN)
_OPENSSL_TIMEOUT = 30.0


class ProtectedSettingsError(ExtHandlerError, ValueError):
    """Protected settings could not be decrypted or parsed; never quotes the plaintext."""


def find_certificate(lib_dir: Path, thumbprint: str) -> tuple[Path, Path]:
    """The (`.crt`, `.prv`) pair for `thumbprint` in `lib_dir`, matched case-insensitively."""
    if not _THUMBPRINT.fullmatch(thumbprint):
        raise ProtectedSettingsError(f"{thumbprint!r} is not a SHA-1 thumbprint (40 hex digits)")
    wanted = thumbprint.upper()
    found: dict[str, Path] = {}
    try:
        entries = sorted(lib_dir.iterdir())
    except OSError as exc:
        raise ProtectedSettingsError(f"cannot list {lib_dir}: {exc.strerror}") from None
    for entry in entries:
        kind = certificate_file_kind(entry.name, wanted)
        if kind is not None:
            found.setdefault(kind, entry)
    missing = [f"{wanted}.{kind}" for kind in CERTIFICATE_KINDS if kind not in found]
    if missing:
        raise ProtectedSettingsError(
            f"no certificate for thumbprint {wanted} in {lib_dir} (missing {', '.join(missing)})"
        )
    return found["crt"], found["prv"]


def decrypt_protected_settings(
    data: str, lib_dir: Path, thumbprint: str, *, use_library: bool = True
) -> dict[str, Any]:
    """Decrypt base64 DER enveloped data with the pair in `lib_dir`; returns a JSON object.

    `use_library=False` goes straight to `openssl cms -decrypt`.
    """
    crt, prv = find_certificate(lib_dir, thumbprint)
    try:
        der = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ProtectedSettingsError("protected settings are not valid base64") from None
    if not der:
        raise ProtectedSettingsError("protected settings are empty")
    plaintext = _decrypt_with_library(der, crt, prv) if use_library else None
    if plaintext is None:
        plaintext = _decrypt_with_openssl(der, crt, prv)
    return _parse_object(plaintext)


def _decrypt_with_library(der: bytes, crt: Path, prv: Path) -> bytes | None:
    """Decrypt with cryptography; None when it is missing or refuses the cipher."""
    try:
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import pkcs7
    except ImportError:  # pragma: no cover - depends on what is installed
        return None
    decrypt = getattr(pkcs7, "pkcs7_decrypt_der", None)
    if decrypt is None:  # pragma: no cover - older cryptography
        return None
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        key = serialization.load_pem_private_key(prv.read_bytes(), None)
    except OSError as exc:
        raise ProtectedSettingsError(f"cannot read {crt.stem}: {exc.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Let openssl try (and report) keys cryptography cannot load.
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    try:
        return bytes(decrypt(der, cert, key, []))
    except (UnsupportedAlgorithm, ValueError):
        # ValueError covers ciphers it does not implement (3DES, AES-192) as well as
        # damaged data; openssl either decrypts or explains.
        return None


def _decrypt_with_openssl(der: bytes, crt: Path, prv: Path) -> bytes:
    """`openssl cms -decrypt -inform DER -recip crt -inkey prv`, DER on stdin."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ProtectedSettingsError("cannot decrypt protected settings: no openssl on PATH")
    command = [openssl, "cms", "-decrypt", "-binary", "-inform", "DER"]
    command += ["-recip", str(crt), "-inkey", str(prv)]
    try:
        result = subprocess.run(
            command, input=der, capture_output=True, timeout=_OPENSSL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "timed out"
        raise ProtectedSettingsError(f"cannot run openssl: {reason}") from None
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        first = lines[0][:200] if lines else "no diagnostics"
        raise ProtectedSettingsError(
            f"openssl cms -decrypt with certificate {crt.stem} failed "
            f"(exit {result.returncode}): {first}"
        )
    return result.stdout


def _parse_object(plaintext: bytes) -> dict[str, Any]:
    """The decrypted JSON object; errors never include the text."""
    value: Any = None
    parsed = True
    try:
        value = json.loads(plaintext.decode("utf-8-sig"))
    except ValueError:
        parsed = False
    if not parsed:
        raise ProtectedSettingsError("decrypted protected settings are not UTF-8 JSON")
    if not isinstance(value, dict):
        raise ProtectedSettingsError("decrypted protected settings are not a JSON object")
    return value
