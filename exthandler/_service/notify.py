"""The sd_notify protocol: datagrams of `KEY=value` lines to `$NOTIFY_SOCKET`.

`$NOTIFY_SOCKET` is a path, or `@name` for a socket in the abstract namespace. Sending
never fails the service: a socket that went away loses the message.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping

import attrs

__all__ = ["Notifier", "watchdog_interval"]

# What systemd puts in a service's environment for it; the service's children must not
# talk to systemd in its name, so these are taken out of the environment once read.
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(text: str) -> str | bytes:
    if text.startswith("@"):
        return b"\0" + text[1:].encode()
    return text


@attrs.define(eq=False)
class Notifier:
    """One service manager's notify socket."""

    address: str
    watchdog: float | None = None  # seconds between WATCHDOG=1 (half of $WATCHDOG_USEC)
    _socket: socket.socket | None = attrs.field(default=None, init=False)
    # Once STOPPING=1 went out, watchdog pings stop: the stop timeout governs from then.
    stopping: bool = attrs.field(default=False, init=False)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier | None:
        """The notifier `environ` names (None without `$NOTIFY_SOCKET`), taking the
        variables out of `environ` so that no child process inherits them."""
        values = {name: environ.pop(name, "") for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"]
        if not address or not (address.startswith(("/", "@"))):
            return None
        return cls(address, watchdog_interval(values["WATCHDOG_USEC"], values["WATCHDOG_PID"]))

    def send(self, *fields: str) -> None:
        """One datagram of `fields` (`READY=1`, `STATUS=...`); a field's newlines are
        spaces (a newline separates fields)."""
        if "STOPPING=1" in fields:
            self.stopping = True
        elif self.stopping and fields == ("WATCHDOG=1",):
            return
        message = "\n".join(" ".join(field.splitlines()) for field in fields)
        with contextlib.suppress(OSError):
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
            self._socket.sendto(message.encode("utf-8", "replace"), _address(self.address))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(usec: str, pid: str = "") -> float | None:
    """Half of `$WATCHDOG_USEC` in seconds, or None when there is no watchdog for this
    process (unset, not a positive number, or `$WATCHDOG_PID` names another process)."""
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
