"""Decrypting protected settings (docs/protocol.md#on-disk), the way extensions do.

The data is base64 of DER PKCS#7/CMS EnvelopedData addressed to the certificate whose
SHA-1 thumbprint the settings name; the `<THUMBPRINT>.crt`/`.prv` pair lives in the parent
of the handler dir. `cryptography` decrypts when it is installed and implements the
content cipher; otherwise `openssl cms -decrypt` does (the binary every extension relies
on). The plaintext only lives in memory, and no error raised here carries it or key
material, in its message or in its chained exceptions.
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
_STDERR_CHARS = 200


class ProtectedSettingsError(ExtHandlerError, ValueError):
    """Protected settings could not be decrypted or parsed; never quotes the plaintext.

    `thumbprint` names the certificate involved, upper-case, once the name is known valid.
    """

    def __init__(self, message: str, *, thumbprint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.thumbprint = thumbprint


def find_certificate(lib_dir: Path, thumbprint: str) -> tuple[Path, Path]:
    """The (`.crt`, `.prv`) pair for `thumbprint` in `lib_dir`, matched case-insensitively.

    Only a SHA-1 hex thumbprint is accepted, so a crafted one cannot name another file.
    """
    if not _THUMBPRINT.fullmatch(thumbprint):
        # Whatever was given is not quoted: it may be a secret pasted into the wrong field.
        raise ProtectedSettingsError("the thumbprint is not a SHA-1 thumbprint (40 hex digits)")
    wanted = thumbprint.upper()
    try:
        entries = sorted(lib_dir.iterdir())
    except OSError as exc:
        raise ProtectedSettingsError(
            f"cannot list {lib_dir} for certificate {wanted}: {exc.strerror}", thumbprint=wanted
        ) from None
    found: dict[str, Path] = {}
    for entry in entries:
        kind = certificate_file_kind(entry.name, wanted)
        if kind is not None:
            found.setdefault(kind, entry)
    missing = [f"{wanted}.{kind}" for kind in CERTIFICATE_KINDS if kind not in found]
    if missing:
        raise ProtectedSettingsError(
            f"no certificate for thumbprint {wanted} in {lib_dir} (missing {', '.join(missing)})",
            thumbprint=wanted,
        )
    return found["crt"], found["prv"]


def decrypt_protected_settings(
    data: str, lib_dir: Path, thumbprint: str, *, use_library: bool = True
) -> dict[str, Any]:
    """Decrypt base64 DER enveloped data with the pair in `lib_dir`; returns a JSON object.

    `use_library=False` goes straight to `openssl cms -decrypt`, as does a missing
    `cryptography` or a content cipher it does not implement.
    """
    crt, prv = find_certificate(lib_dir, thumbprint)
    tp = thumbprint.upper()
    try:
        der = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ProtectedSettingsError(
            "protected settings are not valid base64", thumbprint=tp
        ) from None
    if not der:
        raise ProtectedSettingsError("protected settings are empty", thumbprint=tp)
    plaintext = _decrypt_with_library(der, crt, prv, tp) if use_library else None
    if plaintext is None:
        plaintext = _decrypt_with_openssl(der, crt, prv, tp)
    return _parse_object(plaintext, tp)


def _decrypt_with_library(der: bytes, crt: Path, prv: Path, tp: str) -> bytes | None:
    """Decrypt with cryptography; None when it is missing or cannot handle the envelope.

    The pair is checked first: an unreadable file, material that is not an unencrypted
    PEM, or a key that is not RSA is an error of its own, reported without quoting it.
    """
    try:
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import pkcs7
    except ImportError:  # pragma: no cover - depends on what is installed
        return None
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        key = serialization.load_pem_private_key(prv.read_bytes(), None)
    except OSError as exc:
        raise ProtectedSettingsError(
            f"cannot read certificate {tp}: {exc.strerror}", thumbprint=tp
        ) from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The exception may quote the file: say only which pair is unusable.
        raise ProtectedSettingsError(
            f"certificate {tp} or its key is not a readable unencrypted PEM", thumbprint=tp
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProtectedSettingsError(f"the key of certificate {tp} is not RSA", thumbprint=tp)
    decrypt = getattr(pkcs7, "pkcs7_decrypt_der", None)
    if decrypt is None:  # pragma: no cover - cryptography before CMS decryption
        return None
    try:
        return bytes(decrypt(der, cert, key, []))
    except (UnsupportedAlgorithm, ValueError):
        # A cipher it does not implement (3DES, AES-192) or damaged data; its message may
        # quote the input. openssl either decrypts or explains.
        return None


def _decrypt_with_openssl(der: bytes, crt: Path, prv: Path, tp: str) -> bytes:
    """`openssl cms -decrypt -inform DER -recip crt -inkey prv`, DER on stdin, text on stdout."""
    failed = f"cannot decrypt protected settings with certificate {tp}"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ProtectedSettingsError(f"{failed}: no openssl binary on PATH", thumbprint=tp)
    command = [openssl, "cms", "-decrypt", "-binary", "-inform", "DER"]
    command += ["-recip", str(crt), "-inkey", str(prv)]
    try:
        result = subprocess.run(
            command, input=der, capture_output=True, timeout=_OPENSSL_TIMEOUT, check=False
        )
    except OSError as exc:
        raise ProtectedSettingsError(
            f"{failed}: cannot run openssl: {exc.strerror}", thumbprint=tp
        ) from None
    except subprocess.TimeoutExpired:
        # The exception keeps whatever stdout was read: never chained.
        raise ProtectedSettingsError(
            f"{failed}: openssl timed out after {_OPENSSL_TIMEOUT:g} s", thumbprint=tp
        ) from None
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        first = lines[0][:_STDERR_CHARS] if lines else "no diagnostics"
        raise ProtectedSettingsError(
            f"{failed}: openssl cms -decrypt failed (exit {result.returncode}): {first}",
            thumbprint=tp,
        )
    return result.stdout


_JSON_TYPES: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _parse_object(plaintext: bytes, tp: str) -> dict[str, Any]:
    """The decrypted JSON object; errors say what was wrong, never what the text was."""
    value: Any = None
    parsed = True
    try:
        value = json.loads(plaintext.decode("utf-8-sig"))
    except ValueError:
        # UnicodeDecodeError and JSONDecodeError both hold the text: not raised from here.
        parsed = False
    if not parsed:
        raise ProtectedSettingsError(
            "decrypted protected settings are not UTF-8 JSON", thumbprint=tp
        )
    if not isinstance(value, dict):
        kind = _JSON_TYPES.get(type(value), "value")
        raise ProtectedSettingsError(
            f"decrypted protected settings are a JSON {kind}, not an object", thumbprint=tp
        )
    return value
