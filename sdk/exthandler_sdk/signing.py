"""Signing handler packages, public for publishers' tools and the runtime's testing kit:
`load_signer` reads a key, its certificate and a chain; `write_signature` writes a zip's
`.zip.sig` (docs/policy.md). Needs the `cryptography` package (the `crypto` extra)."""

from __future__ import annotations

from ._signing import Signer as Signer
from ._signing import SigningError as SigningError
from ._signing import load_signer as load_signer
from ._signing import sign_detached as sign_detached
from ._signing import write_signature as write_signature

__all__ = ["Signer", "SigningError", "load_signer", "sign_detached", "write_signature"]
