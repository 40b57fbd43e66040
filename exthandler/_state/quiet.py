"""The quiet-pass stamp: what the last pass that changed nothing read, as stats.

A pass over an unchanged goal state runs no step and writes nothing; all it does is read
(records, status files, manifests, repositories, the policy) and show what it read. When
such a pass ends, `apply` keeps a stamp in `.exthandler/quiet-pass.json`: the goal state's
digest, what the command line asked for (`key`), the boot id, and one digest over the
stats of every file and dir the pass depended on. The next `apply` of the same goal whose
stats all match has nothing to do either, and shows the view file as it is: one stat per
input, without the event loop or the engine (docs/runtime.md, "Quiet passes").

What makes the shortcut safe:

- Every pass removes the stamp before it changes anything (`discard`), and every file
  the runtime writes is replaced or appended to, so its stat changes;
- a stamp is kept only when every file a handler may write was last modified well
  before the pass began reading (`RACY_NS`): a change in the same clock tick as the read
  would otherwise keep its stat (file times come from a coarse clock);
- a stamp that shows heartbeats holds only until the first of them would turn stale;
- whatever the check cannot vouch for (no stamp, another runtime holding the lock, a
  killed runtime's leftovers, a different goal, command line, boot or any stat) means
  a whole pass, as before.

Nothing here imports attrs or the engine (the SDK's `procs` reads the boot id, as the
engine does): the check runs before the engine is imported.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from exthandler_sdk.procs import read_boot_id

from .._fs import read_regular, write_atomic

__all__ = ["STAMP_FILE", "Inputs", "check", "discard", "write"]

STAMP_FILE = "quiet-pass.json"
_FORMAT = 1
# A file a handler may write must be older than the start of the pass by this much: file
# times come from a clock that ticks every few milliseconds, so a change in the tick of the
# pass's read could leave the same stat behind. Times in whole seconds (a file system with
# coarse times) need a whole window of two seconds.
RACY_NS = 100_000_000
_COARSE_RACY_NS = 2_000_000_000
# A stamp is the runtime's own file; one of a state dir of 100,000 handlers is ~20 MB.
_STAMP_LIMIT = 256 << 20


class Inputs:
    """What a pass that changed nothing depended on (see `Engine.quiet_inputs`).

    - `own`: the runtime's own files and dirs (records, journal, view, ...): only the lock
      holder writes them, always by replacing or appending;
    - `handlers`: files and dirs handlers write (status files, heartbeats, events dirs,
      manifests): they must be older than `started_ns` by `RACY_NS`;
    - `followed`: paths named by the configuration (repositories, the policy file, trusted
      roots), stat'ed through links as the runtime reads them;
    - `valid_until`: the epoch second at which a heartbeat shown would turn stale.
    """

    __slots__ = ("boot_id", "followed", "handlers", "own", "started_ns", "valid_until")

    def __init__(
        self,
        *,
        started_ns: int,
        own: Sequence[str],
        handlers: Sequence[str],
        followed: Sequence[str],
        boot_id: str,
        valid_until: float | None = None,
    ) -> None:
        self.started_ns = started_ns
        self.own = list(own)
        self.handlers = list(handlers)
        self.followed = list(followed)
        self.boot_id = boot_id
        self.valid_until = valid_until


def _stats(
    paths: Iterable[str], *, follow: bool, into: array.array[int], racy_from: int | None = None
) -> str | None:
    """Append each path's (kind, inode, size, mtime, ctime, mode, uid) to `into`; a path
    that is not there, or cannot be stat'ed, appends its error number instead. With
    `racy_from`, the first path modified too close to (or after) that time is returned."""
    racy = None
    for path in paths:
        try:
            info = os.stat(path, follow_symlinks=follow)
        except OSError as exc:
            into.extend((-1, exc.errno or 0, 0, 0, 0, 0, 0))
            continue  # absent: its appearance changes the stat
        mtime, ctime = info.st_mtime_ns, info.st_ctime_ns
        into.extend((1, info.st_ino, info.st_size, mtime, ctime, info.st_mode, info.st_uid))
        if racy_from is not None and racy is None and _racy(mtime, ctime, racy_from):
            racy = path
    return racy


def _racy(mtime: int, ctime: int, started_ns: int) -> bool:
    """Whether a file with these times may have changed in the clock tick of the read."""
    for stamp in (mtime, ctime):
        window = _COARSE_RACY_NS if stamp % 1_000_000_000 == 0 else RACY_NS
        if stamp > started_ns - window:
            return True
    return False


def _digest(
    root: str,
    own: Sequence[str],
    handlers: Sequence[str],
    followed: Sequence[str],
    racy_from: int | None = None,
) -> tuple[str, str | None]:
    """The digest of the stats of every input; and, with `racy_from`, the first file of
    a handler's that was modified too recently to be vouched for."""
    numbers: array.array[int] = array.array("q")
    _stats(_absolute(root, own), follow=False, into=numbers)
    racy = _stats(_absolute(root, handlers), follow=False, into=numbers, racy_from=racy_from)
    _stats(followed, follow=True, into=numbers)
    return hashlib.sha256(numbers.tobytes()).hexdigest(), racy


def _absolute(root: str, paths: Sequence[str]) -> list[str]:
    return [path if path.startswith("/") else f"{root}/{path}" for path in paths]


def _absolute_all(paths: Sequence[str]) -> list[str]:
    return [path if path.startswith("/") else os.path.abspath(path) for path in paths]


def _relative(root: str, paths: Sequence[str]) -> list[str]:
    """Paths under `root` without it (a stamp of many handlers is mostly their names)."""
    prefix = f"{root}/"
    cut = len(prefix)
    return [path[cut:] if path.startswith(prefix) else path for path in paths]


def discard(meta: str) -> None:
    """Remove the stamp of the state dir whose meta dir is `meta` (a pass is starting).
    One that cannot be removed is harmless: whatever the pass changes changes its stats."""
    with contextlib.suppress(OSError):
        os.unlink(f"{meta}/{STAMP_FILE}")


def write(
    root: str,
    meta: str,
    *,
    key: str,
    goal: str,
    boot_id_path: str,
    inputs: Inputs,
    followed: Sequence[str] = (),
) -> str | None:
    """Keep the stamp of a quiet pass (`followed`: more paths the caller depends on,
    stat'ed through links); None when kept, else why not (a file too recent)."""
    followed = [*inputs.followed, *followed]
    root = os.path.abspath(root)
    own = _relative(root, _absolute_all(inputs.own))
    handlers = _relative(root, _absolute_all(inputs.handlers))
    digest, racy = _digest(root, own, handlers, followed, inputs.started_ns)
    if racy is not None:
        return f"{racy}: changed while the pass read it"
    document = {
        "format": _FORMAT,
        "key": key,
        "goal": goal,
        "bootIdPath": boot_id_path,
        "bootId": inputs.boot_id,
        "validUntil": inputs.valid_until,
        "own": own,
        "handlers": handlers,
        "followed": followed,
        "digest": digest,
    }
    # A cache: lost in a crash, the next apply runs a whole pass and writes it again.
    write_atomic(f"{meta}/{STAMP_FILE}", json.dumps(document).encode(), mode=0o600, durable=False)
    return None


def check(root: str, meta: str, *, key: str, goal: str) -> bytes | None:
    """The view file's bytes, if the stamp vouches for a pass over `goal` with `key`; read
    under the state dir's lock (taken and dropped here, never waited for), after a clean
    end of the last runtime. None: run the whole pass."""
    try:
        info = os.stat(meta, follow_symlinks=False)
    except OSError:
        return None
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        return None  # not the private dir a runtime made: a whole pass says what is wrong
    try:
        fd = os.open(f"{meta}/lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another runtime works here, or no locks: the whole pass says so
            return None
        if os.pread(fd, 64, 0).strip():
            return None  # the last runtime was killed: its leftovers need a whole pass
        if not _matches(os.path.abspath(root), meta, key=key, goal=goal):
            return None
        try:
            return read_regular(f"{meta}/instance-view.json", _STAMP_LIMIT)
        except OSError:
            return None
    finally:
        os.close(fd)  # drops the lock


def _matches(root: str, meta: str, *, key: str, goal: str) -> bool:
    try:
        document = json.loads(read_regular(f"{meta}/{STAMP_FILE}", _STAMP_LIMIT))
    except (OSError, ValueError):  # none, a link, too large, not JSON
        return False
    try:
        if document["format"] != _FORMAT or document["key"] != key or document["goal"] != goal:
            return False
        valid_until = document["validUntil"]
        if valid_until is not None and time.time() >= valid_until:
            return False
        # "unknown" when unreadable, as the engine records it.
        if (read_boot_id(Path(document["bootIdPath"])) or "unknown") != document["bootId"]:
            return False
        own, handlers, followed = document["own"], document["handlers"], document["followed"]
        return bool(_digest(root, own, handlers, followed)[0] == document["digest"])
    except (KeyError, TypeError, AttributeError, ValueError, OSError):
        return False
