"""The one place the runtime runs `openssl`: verifying a CMS detached signature.

Why a command and not the `cryptography` library the runtime otherwise uses: that library
makes CMS/PKCS#7 signatures but does not verify them (it can neither check a signed-data
structure's signer against its content nor build a certificate chain for an arbitrary
purpose; its X.509 verifier serves TLS, and enforces validity times and TLS key usages).
The reference agent's rule is defined by what `openssl cms -verify` accepts, so the
runtime asks `openssl cms -verify` itself, with the reference agent's options, and only
the configured roots as trust anchors (never the system's certificate store).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio

from .._values import Value

__all__ = ["CmsVerdict", "OpenSSLMissingError", "cms_verify", "verify_command"]

# Long enough for a large package on a slow disk; verification normally takes milliseconds.
_TIMEOUT = 120.0
_STDERR_CAP = 4096


class OpenSSLMissingError(OSError):
    """There is no `openssl` command on PATH."""


class CmsVerdict(Value):
    """How a signature fared: `ok`, else `kind` (malformed, tampered or untrusted) and
    openssl's own reason."""

    ok: bool
    kind: str = ""
    reason: str = ""


def verify_command(signature: Path, content: Path, roots: Path) -> list[str]:
    """The `openssl cms -verify` command line the runtime runs (the reference agent's,
    plus `-no-CApath -no-CAstore`: only `roots` are trusted)."""
    return [
        "openssl", "cms", "-verify", "-binary", "-inform", "der",
        "-in", str(signature), "-content", str(content),
        "-purpose", "any", "-no_check_time",
        "-CAfile", str(roots), "-no-CApath", "-no-CAstore",
        "-out", os.devnull,
    ]  # fmt: skip


async def _run(command: list[str]) -> tuple[int, str]:
    executable = shutil.which(command[0])
    if executable is None:
        raise OpenSSLMissingError("the openssl command is not on PATH")
    with anyio.fail_after(_TIMEOUT):
        result = await anyio.run_process(
            [executable, *command[1:]], check=False, stdin=subprocess.DEVNULL
        )
    text = result.stderr[:_STDERR_CAP].decode("utf-8", "replace")
    return result.returncode, text


def _first_error(stderr: str) -> str:
    """openssl's most telling words: what follows `Verify error:`, else the reason field
    of its first error line (`...:error:CODE:LIBRARY:FUNCTION:REASON:FILE:LINE:...`)."""
    if "Verify error:" in stderr:
        return stderr.split("Verify error:", 1)[1].splitlines()[0].strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if ":error:" in line:
            parts = line.split(":")
            return parts[5] if len(parts) > 5 else line
    return lines[0] if lines else "openssl refused it"


async def cms_verify(signature: Path, content: Path, roots: Path) -> CmsVerdict:
    """Whether `signature` (DER CMS) is a valid detached signature of `content` by a
    certificate that chains to one of the PEM certificates in `roots`, as `openssl cms
    -verify` decides it; when not, which of the checks failed. OpenSSLMissingError when
    there is no openssl."""
    code, stderr = await _run(verify_command(signature, content, roots))
    if code == 0:
        return CmsVerdict(ok=True)
    reason = _first_error(stderr)
    # Which check failed: the signature over the content alone (certificates unchecked),
    # then whether the signature parses at all.
    alone = verify_command(signature, content, roots)
    at = alone.index("-CAfile")
    del alone[at : at + 2]
    alone.insert(3, "-noverify")
    code_alone, stderr_alone = await _run(alone)
    if code_alone == 0:
        return CmsVerdict(ok=False, kind="untrusted", reason=reason)
    parse = ["openssl", "cms", "-cmsout", "-inform", "der", "-in", str(signature), "-noout"]
    code_parse, stderr_parse = await _run(parse)
    if code_parse != 0:
        return CmsVerdict(ok=False, kind="malformed", reason=_first_error(stderr_parse))
    return CmsVerdict(ok=False, kind="tampered", reason=_first_error(stderr_alone))
