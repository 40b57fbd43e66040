"""Faults to inject into a handler: a command that hangs, crashes, exits non-zero, or
writes a malformed status file.

For an SDK handler class, `faulty_class` derives a subclass whose operation misbehaves;
for a package zip, `faulty_package` rewrites the zip so that the manifest's command for
the operation runs a small sh script instead. A "crash" is an unexpected exception in an
SDK handler (error -1, exit 1) and death by SIGKILL for a package (exit 137).
"""

from __future__ import annotations

import enum
import io
import json
import shlex
import zipfile
from pathlib import Path
from typing import Any

import anyio
import attrs
from exthandler_sdk import Context, Handler, HandlerError, Operation
from exthandler_sdk.files import write_atomic
from exthandler_sdk.protocol import MANIFEST_NAME

__all__ = [
    "KILL_AT_VARIABLE",
    "KILL_DIR_VARIABLE",
    "KILL_HANDLER_VARIABLE",
    "Fault",
    "FaultKind",
    "add_kill_points",
    "faulty_class",
    "faulty_package",
]

KILL_DIR_VARIABLE = "EXTHANDLER_TESTING_KILL_DIR"
"""Set for a runtime to be killed mid-operation: the kill point reports there, then waits."""
KILL_AT_VARIABLE = "EXTHANDLER_TESTING_KILL_AT"
"""The operation whose command is the kill point."""
KILL_HANDLER_VARIABLE = "EXTHANDLER_TESTING_KILL_HANDLER"
"""`Publisher.Type` or `Publisher.Type-Version` limiting the kill point (empty: any)."""
_SCRIPT_DIR = "bin/.exthandler-testing"
_BAD_STATUS = b'{"status": "this is not an array"}'


# Faults and operations are compared by value, never by identity: pytester's in-process
# runs re-import modules, so one test session may hold two copies of these enums.
class FaultKind(enum.StrEnum):
    HANG = "hang"
    CRASH = "crash"
    EXIT = "exit"
    BAD_STATUS = "bad-status"


@attrs.frozen(kw_only=True)
class Fault:
    """What goes wrong, and in which operation. Build with the class methods."""

    kind: FaultKind = attrs.field(converter=FaultKind)
    operation: Operation = attrs.field(converter=Operation)
    code: int = 1
    content: bytes = _BAD_STATUS

    @classmethod
    def hang(cls, operation: Operation | str = Operation.ENABLE) -> Fault:
        """The operation never finishes: the runtime's timeout kills it (error 1011)."""
        return cls(kind=FaultKind.HANG, operation=Operation(operation))

    @classmethod
    def crash(cls, operation: Operation | str = Operation.ENABLE) -> Fault:
        """The operation dies: an unexpected exception (SDK) or SIGKILL (package)."""
        return cls(kind=FaultKind.CRASH, operation=Operation(operation))

    @classmethod
    def exit(cls, operation: Operation | str = Operation.ENABLE, code: int = 1) -> Fault:
        """The operation fails with `code` (`HandlerError(code)`, or `exit code`)."""
        return cls(kind=FaultKind.EXIT, operation=Operation(operation), code=code)

    @classmethod
    def bad_status(
        cls, operation: Operation | str = Operation.ENABLE, content: bytes = _BAD_STATUS
    ) -> Fault:
        """The operation exits 0 but leaves `content` as its status file (error 1012)."""
        return cls(kind=FaultKind.BAD_STATUS, operation=Operation(operation), content=content)


def faulty_class(handler_class: type[Handler[Any, Any]], fault: Fault) -> type[Handler[Any, Any]]:
    """A subclass of `handler_class` (same name, version and settings) whose `fault.operation`
    misbehaves as `fault` says."""

    async def operation(self: Handler[Any, Any], ctx: Context[Any, Any]) -> None:
        if fault.kind == FaultKind.HANG:
            await anyio.sleep_forever()  # only a timeout ends it
        if fault.kind == FaultKind.CRASH:
            raise RuntimeError(f"injected crash in {fault.operation.value}")
        if fault.kind == FaultKind.EXIT:
            raise HandlerError(fault.code, f"injected failure of {fault.operation.value}")
        # A terminal status first, so that the SDK writes none over the bad one.
        await ctx.status.success("about to be overwritten")
        write_atomic(ctx.status.path, fault.content)

    namespace = {
        fault.operation.value: operation,
        "__module__": handler_class.__module__,
        "__qualname__": handler_class.__qualname__,
        "__doc__": f"{handler_class.__qualname__} with an injected {fault.kind} fault",
    }
    return type(handler_class.__name__, (handler_class,), namespace)


def _fault_script(fault: Fault, original: str) -> str:
    """The sh script run instead of `original` (a command relative to the handler dir)."""
    here = 'here=$(cd "$(dirname "$0")/../.." && pwd)\n'
    if fault.kind == FaultKind.HANG:
        body = "sleep 3600 &\nwait\n"
    elif fault.kind == FaultKind.CRASH:
        body = "kill -KILL $$\n"
    elif fault.kind == FaultKind.EXIT:
        body = f"echo 'injected failure of {fault.operation.value}' >&2\nexit {fault.code}\n"
    else:
        content = shlex.quote(fault.content.decode("utf-8", "replace"))
        body = (
            here + 'name="$ConfigSequenceNumber.status"\n'
            '[ -z "${ConfigExtensionName:-}" ] || name="$ConfigExtensionName.$name"\n'
            f'mkdir -p "$here/status"\nprintf %s {content} > "$here/status/$name"\nexit 0\n'
        )
    return f"#!/bin/sh\n# injected {fault.kind} fault; the original command: {original}\n{body}"


def _kill_point_script(operation: Operation, original: str) -> str:
    """Runs `original`, except when a test kills the runtime at this operation (of this
    handler): then it writes `<pid> <handler dir name>` to `$EXTHANDLER_TESTING_KILL_DIR/at`
    and waits to be killed."""
    kill_dir, kill_at, only = KILL_DIR_VARIABLE, KILL_AT_VARIABLE, KILL_HANDLER_VARIABLE
    return (
        "#!/bin/sh\n"
        f"# a kill point for tests; the original command: {original}\n"
        'here=$(cd "$(dirname "$0")/../.." && pwd)\n'
        'dir=$(basename "$here")\n'
        f'only="${{{only}:-}}"\n'
        "match=no\n"
        'case "$dir" in "$only" | "$only"-*) match=yes ;; esac\n'
        '[ -n "$only" ] || match=yes\n'
        f'if [ -n "${{{kill_dir}:-}}" ] && [ "${{{kill_at}:-}}" = "{operation.value}" ]'
        ' && [ "$match" = yes ]; then\n'
        f'    echo "$$ $dir" > "${kill_dir}/at.tmp"\n'
        f'    mv "${kill_dir}/at.tmp" "${kill_dir}/at"\n'
        "    sleep 60 &\n"
        "    wait\n"
        "fi\n"
        f'exec /bin/sh -c "$here/{original.lstrip("/")}"\n'
    )


def _rewrite(package: Path, scripts: dict[Operation, str]) -> None:
    """Point the manifest's commands for `scripts` at new scripts holding their text."""
    with zipfile.ZipFile(package) as archive:
        entries = {info: archive.read(info) for info in archive.infolist()}
    manifests = sorted(
        (info for info in entries if info.filename.rsplit("/", 1)[-1] == MANIFEST_NAME),
        key=lambda info: (info.filename.count("/"), info.filename),
    )
    if not manifests:
        raise ValueError(f"{package}: no {MANIFEST_NAME}")
    manifest_info = manifests[0]
    document = json.loads(entries[manifest_info].decode("utf-8-sig"))
    commands = document[0]["handlerManifest"]
    added: dict[str, str] = {}
    for operation, text in scripts.items():
        path = f"{_SCRIPT_DIR}/{operation.value}.sh"
        added[path] = text
        commands[operation.manifest_key] = path
    entries[manifest_info] = json.dumps(document, indent=2).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries.items():
            if info.filename not in added:
                archive.writestr(info, data)
        for name, text in added.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o100000 | 0o755) << 16
            archive.writestr(info, text)
    package.write_bytes(buffer.getvalue())
    package.with_name(package.name + ".sha256").unlink(missing_ok=True)


def _original_of(package: Path, operation: Operation) -> str:
    with zipfile.ZipFile(package) as archive:
        names = sorted(
            (n for n in archive.namelist() if n.rsplit("/", 1)[-1] == MANIFEST_NAME),
            key=lambda n: (n.count("/"), n),
        )
        if not names:
            raise ValueError(f"{package}: no {MANIFEST_NAME}")
        document = json.loads(archive.read(names[0]).decode("utf-8-sig"))
    return str(document[0]["handlerManifest"].get(operation.manifest_key) or "")


def faulty_package(package: Path, fault: Fault) -> None:
    """Rewrite the zip `package` in place so that `fault.operation` misbehaves (its checksum
    sidecar, now wrong, is removed)."""
    original = _original_of(package, fault.operation)
    _rewrite(package, {fault.operation: _fault_script(fault, original)})


def add_kill_points(package: Path, operations: tuple[Operation, ...] = tuple(Operation)) -> None:
    """Rewrite `package` so that each of `operations` can serve as a kill point (see
    `_kill_point_script`); without the variable set the commands behave as before."""
    originals = {op: _original_of(package, op) for op in operations}
    _rewrite(package, {op: _kill_point_script(op, cmd) for op, cmd in originals.items() if cmd})
