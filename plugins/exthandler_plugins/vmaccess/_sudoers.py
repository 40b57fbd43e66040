"""The sudoers drop-in that grants the users VM Access manages sudo: `/etc/sudoers.d/waagent`
(the reference extension's file), one line per user.

A user with a password gets `NAME ALL=(ALL) ALL`; one without (SSH key only) gets
`NAME ALL=(ALL) NOPASSWD: ALL`, as sudo could not ask it for one. Lines this handler does
not write are kept as they are. A new content is checked before it is installed: with
`visudo -c -f` on a private copy when visudo is installed, else by a strict check of our
own that accepts only blank lines, comments and the two lines above (a line it cannot
vouch for stops the change). It is then installed atomically, mode 0440, owned by root:
sudo refuses to read a drop-in that is writable by others, and skips names holding a dot,
as the temp file's do.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from exthandler_sdk import HandlerError
from exthandler_sdk.files import write_atomic

from ._system import UnsafeFileError, read_file, run_tool, tool

__all__ = ["DROP_IN", "SUDOERS", "SudoersError", "check_lines", "grant_line", "update_grant"]

SUDOERS = Path("/etc/sudoers")
DROP_IN = Path("/etc/sudoers.d/waagent")
HEADER = "# Users granted sudo by Microsoft.OSTCExtensions.VMAccessForLinux.\n"
_GRANT = re.compile(r"(?P<user>[a-z_][a-z0-9_.-]{0,31}) ALL=\(ALL\) (?P<nopasswd>NOPASSWD: )?ALL")
_INCLUDE = re.compile(r"\s*[#@]includedir\s+/etc/sudoers\.d/?\s*$", re.MULTILINE)


class SudoersError(HandlerError):
    """The drop-in cannot be changed safely (code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(1, message)


def grant_line(user: str, *, nopasswd: bool) -> str:
    return f"{user} ALL=(ALL) {'NOPASSWD: ' if nopasswd else ''}ALL"


def check_lines(text: str) -> list[str]:
    """The `line N: ...` problems our own check finds in a drop-in's `text`."""
    problems = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith("#include")):
            continue
        if not _GRANT.fullmatch(line):
            problems.append(f"line {number}: not a line this handler writes ({line[:80]!r})")
    return problems


async def update_grant(user: str, grant: bool | None, *, nopasswd: bool = False) -> bool:
    """Make the drop-in grant `user` sudo (`grant` True, with `nopasswd`), or not (False);
    whether the file changed. `grant` None leaves the user's line as it is."""
    try:
        old = read_file(DROP_IN).decode()
    except FileNotFoundError:
        old = ""
    except (UnsafeFileError, UnicodeDecodeError) as exc:
        raise SudoersError(f"{DROP_IN}: cannot be read safely: {exc}") from None
    lines = old.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    wanted = grant_line(user, nopasswd=nopasswd) if grant else None
    kept: list[str] = []
    placed = False
    for line in lines:
        match = _GRANT.fullmatch(line)
        if match is None or match["user"] != user:
            kept.append(line)
        elif wanted is not None and not placed:
            kept.append(wanted)
            placed = True
    if wanted is not None and not placed:
        kept.append(wanted)
    header = HEADER.rstrip("\n")
    if not any(line.strip() and line != header for line in kept):
        # Nothing left but our header: the file goes.
        if not old:
            return False
        _remove()
        return True
    if kept[0] != header:
        kept.insert(0, header)
    new = "\n".join(kept) + "\n"
    if new == old:
        return False
    await _validate(new)
    _install(new)
    return True


def includes_drop_ins() -> bool | None:
    """Whether /etc/sudoers reads /etc/sudoers.d (None when there is no /etc/sudoers)."""
    try:
        text = read_file(SUDOERS).decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return _INCLUDE.search(text) is not None


async def _validate(text: str) -> None:
    if tool("visudo") is not None:
        with tempfile.TemporaryDirectory(prefix="vmaccess-sudoers-") as private:
            candidate = Path(private) / "waagent"
            write_atomic(candidate, text.encode(), mode=0o440, durable=False)
            try:
                await run_tool("visudo", ["-c", "-q", "-f", str(candidate)])
            except HandlerError as exc:
                raise SudoersError(
                    f"{DROP_IN}: the new content does not pass visudo, left unchanged: "
                    + exc.message.replace(str(candidate), "<new content>")
                ) from None
        return
    problems = check_lines(text)
    if problems:
        raise SudoersError(
            f"{DROP_IN}: visudo is not installed and the file holds lines this handler "
            "cannot check, left unchanged: " + "; ".join(problems)
        )


def _install(text: str) -> None:
    directory = DROP_IN.parent
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o750)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        write_atomic(DROP_IN.name, text.encode(), mode=0o440, dir_fd=fd, owner=(0, 0))
    finally:
        os.close(fd)


def _remove() -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(DROP_IN)
