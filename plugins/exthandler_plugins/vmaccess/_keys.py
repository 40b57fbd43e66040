"""Adding a key to `~user/.ssh/authorized_keys`, as root, in a dir the user controls.

The user may have put anything there to make root write or read elsewhere: `.ssh` or
`authorized_keys` as a symbolic link, `authorized_keys` as a hard link to another file.
So every step goes through descriptors: the home dir is opened once, `.ssh` is opened
from it without following a link (made 0700 and given to the user through its
descriptor), the old key file is read without following a link and only when it has no
other name, and the new one is written beside it and renamed over it, already 0600 and
owned by the user (`write_atomic(owner=...)`): no path the user can change is ever
followed, chmodded or chowned.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from exthandler_sdk import HandlerError
from exthandler_sdk.files import write_atomic

from ._sshkey import SshKey, key_identity
from ._system import UnsafeFileError, read_file

__all__ = ["AUTHORIZED_KEYS", "KeyFileError", "add_key"]

AUTHORIZED_KEYS = "authorized_keys"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class KeyFileError(HandlerError):
    """The key file cannot be changed safely (code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(1, message)


def add_key(home: str, uid: int, gid: int, key: SshKey) -> bool:
    """Append `key` to `home/.ssh/authorized_keys` unless a line already holds it (options
    and comments aside); whether it was added. The dir ends 0700 and the file 0600, both
    owned by `uid`:`gid`."""
    try:
        home_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"the home directory {home} does not exist") from None
    except NotADirectoryError:
        raise KeyFileError(f"the home directory {home} is not a directory") from None
    try:
        owner = os.fstat(home_fd).st_uid
        if owner not in (uid, 0):
            raise KeyFileError(f"{home} belongs to uid {owner}, neither the user nor root")
        ssh_fd = _ssh_dir(home_fd, home, uid, gid)
    finally:
        os.close(home_fd)
    shown = f"{home}/.ssh/{AUTHORIZED_KEYS}"
    try:
        try:
            old = read_file(AUTHORIZED_KEYS, dir_fd=ssh_fd, single=True)
        except FileNotFoundError:
            old = b""
        except UnsafeFileError as exc:
            raise KeyFileError(f"{shown} is {exc.strerror}: refusing to use it") from None
        wanted = (key.kind, key.blob)
        text = old.decode(errors="replace")
        if any(key_identity(line) == wanted for line in text.splitlines()):
            _fix_existing(ssh_fd, uid, gid)
            return False
        if old and not old.endswith(b"\n"):
            old += b"\n"
        data = old + key.line.encode() + b"\n"
        write_atomic(AUTHORIZED_KEYS, data, mode=0o600, dir_fd=ssh_fd, owner=(uid, gid))
        return True
    finally:
        os.close(ssh_fd)


def _ssh_dir(home_fd: int, home: str, uid: int, gid: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(".ssh", 0o700, dir_fd=home_fd)
    try:
        fd = os.open(".ssh", _DIR_FLAGS, dir_fd=home_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise KeyFileError(
                f"{home}/.ssh is a symbolic link or not a directory: refusing to follow it"
            ) from None
        raise
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fix_existing(ssh_fd: int, uid: int, gid: int) -> None:
    """Give the key file that already holds the key its owner and mode, through a
    descriptor of the very file that was checked (no link, one name)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(AUTHORIZED_KEYS, flags, dir_fd=ssh_fd)
    except OSError:
        return  # replaced by a link since it was read: leave it to the next run
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return  # replaced since it was read: leave it to the next run
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
