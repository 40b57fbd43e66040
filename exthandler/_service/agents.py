"""Agent versions: packages of exthandler itself, and the versions installed in a state dir.

An agent package has the shape of a handler package, so that it is published in the same
repositories and artifact manifests as extensions: `Exthandler.Agent.<Family>__<Version>.zip`
(a `.sha256` sidecar beside it) holding

    HandlerManifest.json       a valid manifest (its commands only print the version)
    bin/exthandler-agent       the launcher: `lib/` first on sys.path, then exthandler's CLI
    lib/exthandler/...         the runtime, its `__version__` set to the package's version
    lib/exthandler_sdk/...     the SDK
    lib/exthandler_plugins/... the built-in handlers (when installed where it was built)

The launcher runs with the Python of `exthandler daemon`, whose environment provides the
third-party dependencies (anyio, attrs, ...): a package carries exthandler's own code.

Installed versions live in `<state dir>/agent/<version>/`, extracted with the safe
extractor (explicit modes, nothing outside the dir). `<version>/bad` marks a version the
daemon gave up on (its text says why; the version stays on disk for diagnosis), and
`agent/selected` names the version the running agent chose last.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from exthandler_sdk.protocol import SIGNATURE_SUFFIX

from .. import __version__
from .._fs import UnsafeFileError, make_dir, read_regular, write_atomic
from .._model import HandlerName, Version

if TYPE_CHECKING:
    from exthandler_sdk._signing import Signer

    from .._packages.repository import PackageRef, PackageSource, Workspace

__all__ = [
    "AGENT_PUBLISHER",
    "BAD_MARKER",
    "DEFAULT_FAMILY",
    "LAUNCHER",
    "AgentStore",
    "agent_handler",
    "build_agent_package",
]

AGENT_PUBLISHER = "Exthandler.Agent"
DEFAULT_FAMILY = "Prod"
LAUNCHER = "bin/exthandler-agent"
BAD_MARKER = "bad"
SELECTED = "selected"
PACKAGES = ("exthandler", "exthandler_sdk", "exthandler_plugins")
_MARKER_LIMIT = 64 * 1024
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's time: the same sources give the same zip
_VERSION_LINE = re.compile(r'^__version__ = "[^"\n]*"$', re.MULTILINE)

_LAUNCHER_TEXT = '''\
#!/usr/bin/env python3
"""exthandler {version}, as installed from an agent package: its `lib` comes first."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from exthandler._cli import run  # noqa: E402

sys.exit(run())
'''


def agent_handler(family: str) -> HandlerName:
    """The handler name agent packages of `family` are published under
    (`Exthandler.Agent.Prod`); ValueError when `family` cannot be a handler type."""
    if not family or "." in family:
        raise ValueError(f"{family!r} is not an agent family name (a word without dots)")
    return HandlerName.parse(f"{AGENT_PUBLISHER}.{family}")


def _sources(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _files(root: Path) -> Iterator[Path]:
    """The regular files under `root` worth shipping, sorted; links are not followed."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if name.endswith((".pyc", ".pyo")) or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            yield path


def _entry(archive: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _manifest(handler: HandlerName, version: Version) -> bytes:
    import json

    from exthandler_sdk.protocol import SIGNING_INFO_KEY

    command = f"{LAUNCHER} --version"
    body = {
        f"{op}Command": command for op in ("install", "enable", "disable", "uninstall", "update")
    }
    entry = {"name": str(handler), "version": str(version), "handlerManifest": body}
    # What a signature of the package is a signature of (checked when a policy requires one).
    entry[SIGNING_INFO_KEY] = {
        "type": handler.type,
        "publisher": handler.publisher,
        "version": str(version),
    }
    return json.dumps([entry], indent=2).encode()


def build_agent_package(
    out: Path,
    *,
    version: Version | None = None,
    family: str = DEFAULT_FAMILY,
    signer: Signer | None = None,
) -> Path:
    """Write the agent package of the exthandler this runs from into the dir `out` (made
    if missing), with its `.sha256` sidecar; the zip's path. `version` (default: this
    exthandler's) becomes the packaged runtime's `__version__`. With a `signer`, the zip's
    detached signature is written beside it (`.zip.sig`), as for extension packages."""
    version = version or Version.parse(__version__)
    handler = agent_handler(family)
    roots = {name: _sources(name) for name in PACKAGES}
    runtime = roots["exthandler"]
    assert runtime is not None  # this module is part of it
    from .._packages.repository import package_file_name

    os.makedirs(out, exist_ok=True)
    target = Path(out) / package_file_name(handler, version)
    part = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with zipfile.ZipFile(part, "x") as archive:
            _entry(archive, "HandlerManifest.json", _manifest(handler, version), 0o644)
            launcher = _LAUNCHER_TEXT.format(version=version).encode()
            _entry(archive, LAUNCHER, launcher, 0o755)
            for name, root in roots.items():
                if root is None:
                    continue
                for path in _files(root):
                    relative = path.relative_to(root).as_posix()
                    data = path.read_bytes()
                    if name == "exthandler" and relative == "__init__.py":
                        data = _with_version(data, version, path)
                    _entry(archive, f"lib/{name}/{relative}", data, 0o644)
        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    sidecar = target.with_name(target.name + ".sha256")
    sidecar.write_text(f"{digest}  {target.name}\n")
    signature = target.with_name(target.name + SIGNATURE_SUFFIX)
    if signer is not None:
        from exthandler_sdk._signing import write_signature

        write_signature(target, signer)
    else:
        signature.unlink(missing_ok=True)  # a signature of an earlier build is not this one's
    return target


def _with_version(data: bytes, version: Version, path: Path) -> bytes:
    text, count = _VERSION_LINE.subn(f'__version__ = "{version}"', data.decode("utf-8"))
    if count != 1:
        raise ValueError(f"{path}: no single `__version__ = ...` line to set")
    return text.encode("utf-8")


@attrs.frozen
class AgentStore:
    """The agent versions installed in a state dir (`<state dir>/agent`)."""

    state_dir: Path = attrs.field(converter=Path)

    @property
    def root(self) -> Path:
        return self.state_dir / "agent"

    def path(self, version: Version) -> Path:
        return self.root / str(version)

    def launcher(self, version: Version) -> Path:
        return self.path(version) / LAUNCHER

    def installed(self) -> list[Version]:
        """Every installed version (bad ones included), lowest first: the dirs named as a
        version that hold a launcher."""
        try:
            names = os.listdir(self.root)
        except OSError:  # none yet, or no usable state dir: `run` says why
            return []
        found: dict[Version, str] = {}
        for name in names:
            try:
                version = Version.parse(name)
            except ValueError:
                continue
            try:
                info = os.lstat(self.root / name / LAUNCHER)
            except OSError:
                continue
            if stat.S_ISDIR(os.lstat(self.root / name).st_mode) and stat.S_ISREG(info.st_mode):
                found.setdefault(version, name)
        return sorted(found)

    def good(self) -> list[Version]:
        """The installed versions not marked bad, lowest first."""
        return [v for v in self.installed() if not self.is_bad(v)]

    def is_bad(self, version: Version) -> bool:
        return os.path.lexists(self.path(version) / BAD_MARKER)

    def bad_reason(self, version: Version) -> str | None:
        """Why `version` was marked bad; None when it is not."""
        try:
            data = read_regular(self.path(version) / BAD_MARKER, _MARKER_LIMIT)
        except FileNotFoundError:
            return None
        except OSError:
            return "marked bad"
        return data.decode("utf-8", "replace").strip() or "marked bad"

    def mark_bad(self, version: Version, reason: str) -> None:
        """Never start `version` again; it stays on disk."""
        write_atomic(self.path(version) / BAD_MARKER, reason.encode() + b"\n", mode=0o644)

    def selected(self) -> Version | None:
        """The version the agent chose last (None: none chosen, or unreadable)."""
        try:
            text = read_regular(self.root / SELECTED, 256).decode("ascii", "replace").strip()
            return Version.parse(text)
        except (OSError, ValueError):
            return None

    def select(self, version: Version) -> None:
        make_dir(self.root, 0o755)
        write_atomic(self.root / SELECTED, f"{version}\n".encode(), mode=0o644)

    async def install(
        self,
        source: PackageSource,
        ref: PackageRef,
        workspace: Workspace,
        *,
        checked: Callable[[], bool] | None = None,
    ) -> Path:
        """Install the agent package `ref` from `source` as `agent/<version>/`, verified and
        safely extracted; the dir. PackageError when it cannot be had or is unusable
        (1005 for a package without a launcher, or one that brings its own `bad` mark;
        1004 when `checked()` says the workspace's check never ran: a source that
        installed the package without letting it be verified)."""
        from exthandler_sdk import ErrorCode

        from .._errors import PackageError

        make_dir(self.root, 0o755)
        target = self.path(ref.version)
        partial = self.root / f".{ref.version}.{secrets.token_hex(4)}.partial"
        try:
            await source.install(ref, partial, workspace)
            if checked is not None and not checked():
                raise PackageError(
                    ErrorCode.PACKAGE_DOWNLOAD,
                    "the policy requires a signed package, and its source installed it"
                    " without letting the runtime verify its signature",
                )
            _place(partial, target, ref.file_name)
        finally:
            _remove(partial)
        return target


def _place(partial: Path, target: Path, name: str) -> None:
    """Move the extracted package `partial` to `target` once it is an agent package."""
    from exthandler_sdk import ErrorCode

    from .._errors import PackageError

    problem = None
    try:
        if not stat.S_ISREG(os.lstat(partial / LAUNCHER).st_mode):
            problem = f"{LAUNCHER} is not a regular file"
    except FileNotFoundError:
        problem = f"no {LAUNCHER}"
    if os.path.lexists(partial / BAD_MARKER):
        problem = f"it holds a top-level {BAD_MARKER!r}"
    if problem is not None:
        raise PackageError(
            ErrorCode.PACKAGE_EXTRACTION, f"{name} is not an agent package: {problem}"
        )
    if os.path.lexists(target):
        _remove(target)  # a broken earlier install of the same version
    os.rename(partial, target)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, UnsafeFileError):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
