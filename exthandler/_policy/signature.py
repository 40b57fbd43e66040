"""Verifying a package's signature before anything of it is extracted or run.

The engine hands each fetch a `PackageCheck` (through the `Workspace` it lends the package
source); `install_zip` calls it on the zip, in the workspace, before extracting a byte. It
finds the signature (the goal state's `encodedSignature`, else the repository's `.zip.sig`),
verifies it against the trusted roots (`_openssl.cms_verify`), and checks the package's
`signingInfo` against the extension. When the policy requires a signature, any failure
refuses the package (PackageError 1004, remembered until the package changes); when it
does not, a failure is a warning shown with the extension. A zip verified once (the same
bytes, signature and roots) is not verified again while the runtime lives.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import time
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio
from exthandler_sdk import ErrorCode
from exthandler_sdk.protocol import MANIFEST_NAME, READ_LIMIT, SIGNATURE_SUFFIX, TelemetryEvent

from .._errors import PackageError
from .._fs import UnsafeFileError
from .._model import HandlerName, Version
from .._values import Value
from ._openssl import OpenSSLMissingError, cms_verify
from .policy import read_admin_file

__all__ = [
    "SIGNATURE_LIMIT",
    "SIGNATURE_TASK",
    "CheckOutcome",
    "PackageCheck",
    "PackageVerifier",
    "SignatureCheck",
]

SIGNATURE_LIMIT = 1 << 20
"""An encoded signature longer than this (1 MiB of base64) is refused unread."""

_ROOT_LIMIT = 1 << 20
SIGNATURE_TASK = "PackageSignatureValidation"
"""The `TaskName` of the telemetry event each verification emits."""

PackageCheck = Callable[[Path, str | None], Awaitable[None]]
"""What `install_zip` calls on a zip before extracting it: (zip path, the signature the
source found beside the package, if any). Raises PackageError to refuse the package."""


class SignatureCheck(Value):
    """What one fetch is to check: the handler and version it fetches, the goal state's
    signature for it, and whether the policy requires one."""

    handler: HandlerName
    version: Version
    encoded_signature: str | None
    required: bool


class CheckOutcome:
    """What the check found: whether it ran at all, and the warning to show when a
    signature that is not required did not verify."""

    done: bool
    warning: str | None

    def __init__(self, done: bool = False, warning: str | None = None) -> None:
        self.done = done
        self.warning = warning


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_in(zip_path: Path) -> bytes | None:
    """The bytes of the package's HandlerManifest.json, read from the zip without
    extracting anything (None: no such member, or larger than the manifest limit)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            info = archive.getinfo(MANIFEST_NAME)
            if info.file_size > READ_LIMIT:
                return None
            with archive.open(info) as member:
                return member.read(READ_LIMIT + 1)[:READ_LIMIT]
    except (KeyError, OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError):
        return None


class PackageVerifier:
    """Verifies packages against `roots` (PEM files of trusted certificates); `emit` gets
    one telemetry event per verification, `log` a line per refusal or warning."""

    roots: Sequence[Path]
    emit: Callable[[TelemetryEvent], None]
    log: Callable[[str], None]
    _verified: set[str]
    verifications: int

    def __init__(
        self,
        roots: Sequence[Path],
        emit: Callable[[TelemetryEvent], None],
        log: Callable[[str], None],
    ) -> None:
        self.roots = roots
        self.emit = emit
        self.log = log
        self._verified = set()
        self.verifications = 0

    def bind(self, check: SignatureCheck, outcome: CheckOutcome) -> PackageCheck:
        async def run(zip_path: Path, found: str | None) -> None:
            await self.check(zip_path, found, check, outcome)

        return run

    async def check(
        self, zip_path: Path, found: str | None, check: SignatureCheck, outcome: CheckOutcome
    ) -> None:
        outcome.done = True
        where = f"{check.handler} {check.version}"
        if check.encoded_signature is not None:
            text, source = check.encoded_signature, "the goal state's encodedSignature"
        elif found is not None:
            text, source = found, f"the repository's {zip_path.name}{SIGNATURE_SUFFIX}"
        else:
            if check.required:
                self._refuse(
                    where,
                    "the policy requires a signed package, and this one is not signed (no"
                    f" encodedSignature in the goal state, no {zip_path.name}{SIGNATURE_SUFFIX}"
                    " beside the package)",
                )
            return
        problem = await self._verify(zip_path, text, source, check)
        if problem is None:
            problem = await self._signing_info(zip_path, check)
        if problem is None:
            return
        if check.required:
            self._refuse(where, problem)
        outcome.warning = f"{problem} (a signature is not required: the package was used)"
        self.log(f"{where}: {outcome.warning}")

    def _refuse(self, where: str, message: str) -> None:
        """Refuse the package (1004; the refusal stands until the package changes)."""
        self.log(f"{where}: {message}")
        raise PackageError(ErrorCode.PACKAGE_DOWNLOAD, message)

    async def _verify(
        self, zip_path: Path, text: str, source: str, check: SignatureCheck
    ) -> str | None:
        """Why the signature `text` does not verify, or None when it does."""
        compact = "".join(text.split())
        if len(compact) > SIGNATURE_LIMIT:
            return f"the package signature ({source}) is malformed: longer than 1 MiB"
        try:
            der = binascii.a2b_base64(compact, strict_mode=True)
        except (binascii.Error, ValueError):
            return f"the package signature ({source}) is malformed: not base64"
        if not self.roots:
            return (
                f"the package signature ({source}) cannot be verified: no trusted root is"
                " configured (--trusted-root)"
            )
        try:
            bundle = b"".join(read_admin_file(root, _ROOT_LIMIT) + b"\n" for root in self.roots)
        except OSError as exc:
            reason = exc.reason if isinstance(exc, UnsafeFileError) else exc.strerror or exc
            raise PackageError(
                ErrorCode.PACKAGE_DOWNLOAD,
                f"a trusted root cannot be read: {exc.filename}: {reason}",
                transient=True,
            ) from exc
        content = await anyio.to_thread.run_sync(_digest_file, zip_path)
        key = "/".join(hashlib.sha256(part).hexdigest() for part in (content.encode(), der, bundle))
        if key in self._verified:
            return None
        scratch = zip_path.parent
        token = os.urandom(4).hex()
        sig_file = scratch / f".{token}.sig"
        roots_file = scratch / f".{token}.roots.pem"
        started = time.monotonic()
        try:
            sig_file.write_bytes(der)
            roots_file.write_bytes(bundle)
            verdict = await cms_verify(sig_file, zip_path, roots_file)
        except OpenSSLMissingError as exc:
            if check.required:
                raise PackageError(
                    ErrorCode.PACKAGE_DOWNLOAD,
                    f"signatures cannot be verified: {exc}",
                    transient=True,
                ) from exc
            return f"the package signature ({source}) cannot be verified: {exc}"
        finally:
            sig_file.unlink(missing_ok=True)
            roots_file.unlink(missing_ok=True)
        duration = time.monotonic() - started
        self.verifications += 1
        if verdict.ok:
            self._verified.add(key)
            self._event(check, ok=True, duration=duration, message="signature verified")
            return None
        reasons = {
            "malformed": f"the package signature ({source}) is malformed",
            "tampered": (
                f"the package does not match its signature ({source}): it was changed after"
                " it was signed, or the signature is of another file"
            ),
            "untrusted": f"the package signature ({source}) does not chain to a trusted root",
        }
        problem = f"{reasons[verdict.kind]} ({verdict.reason})"
        self._event(check, ok=False, duration=duration, message=problem)
        return problem

    async def _signing_info(self, zip_path: Path, check: SignatureCheck) -> str | None:
        """Why the signed package's `signingInfo` does not name the extension, or None."""
        from .._packages.manifest import parse_manifest

        data = await anyio.to_thread.run_sync(_manifest_in, zip_path)
        if data is None:
            return f"the signed package has no readable {MANIFEST_NAME}, so no signingInfo"
        try:
            manifest = parse_manifest(data)
        except PackageError as exc:
            return f"the signed package's signingInfo cannot be read: {exc.message}"
        info = manifest.signing_info
        if info is None:
            return f"the signed package's {MANIFEST_NAME} has no signingInfo"
        handler = check.handler
        wrong = info.mismatches(handler.publisher, handler.type, str(check.version))
        if wrong:
            return (
                f"the signed package's signingInfo does not match the extension: {'; '.join(wrong)}"
            )
        return None

    def _event(self, check: SignatureCheck, *, ok: bool, duration: float, message: str) -> None:
        self.emit(
            TelemetryEvent(
                handler=str(check.handler),
                version=str(check.version),
                timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                task_name=SIGNATURE_TASK,
                event_level="Informational" if ok else "Error",
                message=(
                    f"{'success' if ok else 'failure'}: {message}; duration_ms="
                    f"{round(duration * 1000)}"
                ),
                event_pid=str(os.getpid()),
                event_tid="",
                operation_id="",
            )
        )
