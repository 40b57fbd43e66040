"""One certificate per test session, with a key small enough to keep every run fast.

Loading a 2048-bit RSA private key costs about 35 ms (the key is validated on load), and
both the runtime (to check its pair) and the SDK (to decrypt) load it on every run. The
testing kit therefore generates, once per session, a self-signed certificate with a
1024-bit key (`KEY_BITS`): the settings are still real PKCS#7/CMS enveloped data that
`openssl cms -decrypt` and the SDK decrypt, only the key is shorter than in production.
`seed_certificate` copies the pair into a lib dir (a harness root or a runtime's state
dir) together with the runtime's marker, so that the runtime reuses it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._state.crypto import MARKER_NAME, Certificate, _paths, _self_signed, _thumbprint

__all__ = ["KEY_BITS", "seed_certificate", "session_certificate"]

KEY_BITS = 1024
_CACHE: dict[Path, Certificate] = {}


def _generate(directory: Path) -> Certificate:
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    cert = _self_signed(key)
    certificate = _paths(directory, _thumbprint(cert))
    certificate.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certificate.certificate_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path in (certificate.key_path, certificate.certificate_path):
        path.chmod(0o600)
    (directory / MARKER_NAME).write_text(f"{certificate.thumbprint}\n")
    return certificate


def session_certificate(cache_dir: Path) -> Certificate:
    """The pair kept in `cache_dir`, created on first use (and remembered in memory)."""
    key = cache_dir.absolute()
    found = _CACHE.get(key)
    if found is None or not found.certificate_path.exists() or not found.key_path.exists():
        try:
            thumbprint = (key / MARKER_NAME).read_text().strip()
            found = _paths(key, thumbprint)
            if not found.certificate_path.exists() or not found.key_path.exists():
                found = _generate(key)
        except (OSError, ValueError):
            found = _generate(key)
        _CACHE[key] = found
    return found


def seed_certificate(cache_dir: Path, lib_dir: Path) -> Certificate:
    """Copy the session pair (and the runtime's marker naming it) into `lib_dir`."""
    source = session_certificate(cache_dir)
    target = _paths(lib_dir, source.thumbprint)
    lib_dir.mkdir(parents=True, exist_ok=True)
    for origin, copy in (
        (source.certificate_path, target.certificate_path),
        (source.key_path, target.key_path),
    ):
        if not copy.exists():
            shutil.copyfile(origin, copy)
            copy.chmod(0o600)
    marker = lib_dir / MARKER_NAME
    if not marker.exists():
        marker.write_text(f"{source.thumbprint}\n")
    return target
