"""The likely cause of a command's unusual ending, from facts checked afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["exec_hint", "failure_hint"]


def failure_hint(returncode: int | None, handler_dir: Path, relative: str) -> str | None:
    """Why the command `relative` (run in `handler_dir`) ended with `returncode`, when a
    fact explains it; None when none does, and for a timeout (`returncode` None)."""
    if returncode is None:
        return None
    if returncode < 0:
        return f"killed by signal {_signal_name(-returncode)}"
    if 128 < returncode < 128 + signal.NSIG:
        # How a shell reports a child killed by a signal (/bin/sh forks the command).
        return f"probably killed by signal {_signal_name(returncode - 128)}"
    if returncode not in (126, 127):
        return None
    # The program is the command's first word (the rest are its arguments).
    script = handler_dir / relative.split()[0]
    return exec_hint(returncode, script, handler_dir=handler_dir, noexec=_on_noexec(handler_dir))


def _on_noexec(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:  # e.g. an uninstall that removed its own directory
        return False


def exec_hint(exit_code: int, script: Path, *, handler_dir: Path, noexec: bool) -> str | None:
    """Why `/bin/sh` may have exited 126 (cannot execute) or 127 (not found).

    None when nothing explains it: the program itself may have chosen that exit code.
    """
    if not script.exists():
        return f"command not found in the package: {script}"
    if exit_code == 126 and noexec:
        return f"the handler directory {handler_dir} is on a filesystem mounted noexec"
    if script.is_dir():
        return f"{script} is a directory, not a program"
    if not os.access(script, os.X_OK):
        return f"{script} is not executable (it lacks the exec permission bit)"
    interpreter = _interpreter(script) if exit_code == 127 else None
    if interpreter and not os.access(interpreter, os.X_OK):
        return f"the interpreter of {script} is missing: {interpreter}"
    return None


def _interpreter(script: Path) -> str | None:
    """The program named by a `#!` line, if the script starts with one."""
    first = b""
    with contextlib.suppress(OSError), script.open("rb") as file:
        first = file.readline(256)
    words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
    return words[0] if words else None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # e.g. a real-time signal other than SIGRTMIN/SIGRTMAX
        return str(signum)
