"""Application Health's settings: the keys of the reference extension's templates.

Every key is optional in the class so that `resolve()` can check them all together and
report each problem as `key: reason` in one error 53; the result is a `Plan`, the one
value the probe reads.
"""

from __future__ import annotations

import urllib.parse

import attrs
from exthandler_sdk import ErrorCode, HandlerError

__all__ = [
    "DEFAULT_PORTS",
    "GRACE_RANGE",
    "INTERVAL_RANGE",
    "PROBES_RANGE",
    "ApplicationHealthSettings",
    "Plan",
    "resolve",
]

PROTOCOLS = ("tcp", "http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
INTERVAL_RANGE = (5, 60)
"""Seconds between two probes (inclusive bounds)."""
PROBES_RANGE = (1, 24)
"""Consecutive probes that must agree before the state changes."""
GRACE_RANGE = (5, 14400)
"""Seconds the state stays `Initializing` unless the application is found healthy."""
PATH_LIMIT = 2048


@attrs.frozen
class ApplicationHealthSettings:
    """Public settings (see `resolve` for what each must be)."""

    protocol: str | None = None
    """`tcp`, `http` or `https`: how localhost is probed."""
    port: int | None = None
    """The local port to probe (required for tcp; 80 and 443 by default for http(s))."""
    requestPath: str | None = None
    """The path an http(s) probe requests (default `/`); not for tcp."""
    intervalInSeconds: int | None = None
    """Seconds between probes, 5 to 60 (default 5)."""
    numberOfProbes: int | None = None
    """Consecutive probes needed to change the state, 1 to 24 (default 1)."""
    gracePeriod: int | None = None
    """Seconds reported as `Initializing`, 5 to 14400 (default interval x probes)."""


@attrs.frozen(kw_only=True)
class Plan:
    """What the probe does, once the settings are checked."""

    protocol: str
    port: int
    request_path: str | None
    interval: int
    probes: int
    grace: int

    @property
    def target(self) -> str:
        """Where the probe goes, as shown in messages."""
        if self.request_path is None:
            return f"tcp://localhost:{self.port}"
        return f"{self.protocol}://localhost:{self.port}{self.request_path}"


def _in_range(name: str, value: int | None, bounds: tuple[int, int], errors: list[str]) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        errors.append(f"{name}: must be from {low} to {high}, got {value}")


def _request_path(text: str, errors: list[str]) -> str | None:
    if len(text) > PATH_LIMIT:
        errors.append(f"requestPath: longer than {PATH_LIMIT} characters")
        return None
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in text):
        errors.append("requestPath: must not hold spaces or control characters")
        return None
    parts = urllib.parse.urlsplit(text)
    if parts.scheme or parts.netloc or text.startswith("//"):
        errors.append(
            f"requestPath: a path on localhost such as /health, not a URL ({text[:80]!r}): "
            "the probe only ever asks localhost"
        )
        return None
    if parts.fragment or "#" in text:
        errors.append("requestPath: must not hold a fragment ('#')")
        return None
    return text if text.startswith("/") else f"/{text}"


def resolve(settings: ApplicationHealthSettings | None) -> Plan:
    """Check the settings; `HandlerError(53)` listing every problem otherwise."""
    given = settings if settings is not None else ApplicationHealthSettings()
    errors: list[str] = []
    protocol = (given.protocol or "").strip().lower()
    if given.protocol is None:
        errors.append("protocol: required: one of tcp, http, https")
    elif protocol not in PROTOCOLS:
        errors.append(f"protocol: must be one of tcp, http, https, got {given.protocol[:40]!r}")
    port = given.port
    if port is not None and not 1 <= port <= 65535:
        errors.append(f"port: must be from 1 to 65535, got {port}")
    if protocol == "tcp" and port is None:
        errors.append("port: required with the tcp protocol")
    path: str | None = None
    if given.requestPath is not None:
        if protocol == "tcp":
            errors.append("requestPath: only for the http and https protocols, not tcp")
        else:
            path = _request_path(given.requestPath, errors)
    _in_range("intervalInSeconds", given.intervalInSeconds, INTERVAL_RANGE, errors)
    _in_range("numberOfProbes", given.numberOfProbes, PROBES_RANGE, errors)
    _in_range("gracePeriod", given.gracePeriod, GRACE_RANGE, errors)
    if errors:
        text = errors[0] if len(errors) == 1 else "invalid settings:\n" + "\n".join(errors)
        raise HandlerError(int(ErrorCode.CONFIGURATION), text)
    interval = given.intervalInSeconds or 5
    probes = given.numberOfProbes or 1
    grace = given.gracePeriod if given.gracePeriod is not None else interval * probes
    return Plan(
        protocol=protocol,
        port=port if port is not None else DEFAULT_PORTS[protocol],
        request_path=None if protocol == "tcp" else (path or "/"),
        interval=interval,
        probes=probes,
        grace=grace,
    )
