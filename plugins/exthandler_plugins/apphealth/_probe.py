"""One probe of the local application, and the state the probes add up to.

A probe only ever connects to `localhost`. tcp: a connection is `Healthy`, anything else
`Unhealthy`. http(s): a GET of the request path; a 2xx answer whose body is a JSON object
with `"ApplicationHealthState": "Healthy"` (or `"Unhealthy"`) gives that state, any other
answer (another status code, a redirect, which is never followed, a body that is not
such JSON) and any failure to get one gives `Unknown`. https does not verify the
certificate, as the reference extension does not: the application's own certificate is
often self-signed, and the connection never leaves the machine.
"""

from __future__ import annotations

import collections
import enum
import http.client
import json
import socket
import ssl

import anyio
import anyio.to_thread
import attrs

from ._settings import Plan

__all__ = ["BODY_LIMIT", "HealthState", "Result", "StateMachine", "probe"]

BODY_LIMIT = 64 * 1024
"""Bytes of an http(s) answer read at most."""
HOST = "localhost"
STATE_KEY = "ApplicationHealthState"


class HealthState(enum.StrEnum):
    """What `ApplicationHealthState` reports."""

    INITIALIZING = "Initializing"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


@attrs.frozen
class Result:
    """One probe's outcome: the state it found and why, in a few words."""

    state: HealthState
    detail: str


async def probe(plan: Plan, limit: float) -> Result:
    """Probe localhost once as `plan` says, within `limit` seconds."""
    if plan.protocol == "tcp":
        return await _tcp(plan.port, limit)
    return await anyio.to_thread.run_sync(_http, plan, limit, abandon_on_cancel=True)


async def _tcp(port: int, limit: float) -> Result:
    try:
        with anyio.fail_after(limit):
            stream = await anyio.connect_tcp(HOST, port)
    except TimeoutError:
        return Result(HealthState.UNHEALTHY, f"no connection to port {port} within {limit:g} s")
    except OSError as exc:
        return Result(HealthState.UNHEALTHY, f"cannot connect to port {port}: {_reason(exc)}")
    await stream.aclose()
    return Result(HealthState.HEALTHY, f"port {port} accepts connections")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200]


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _http(plan: Plan, timeout: float) -> Result:
    assert plan.request_path is not None
    connection: http.client.HTTPConnection
    if plan.protocol == "https":
        connection = http.client.HTTPSConnection(
            HOST, plan.port, timeout=timeout, context=_unverified_context()
        )
    else:
        connection = http.client.HTTPConnection(HOST, plan.port, timeout=timeout)
    try:
        connection.request(
            "GET",
            plan.request_path,
            headers={"Accept": "application/json", "User-Agent": "ApplicationHealthExtension"},
        )
        response = connection.getresponse()
        body = response.read(BODY_LIMIT + 1)
        code = response.status
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        if isinstance(exc, socket.timeout | TimeoutError):
            return Result(HealthState.UNKNOWN, f"no answer within {timeout:g} s")
        return Result(HealthState.UNKNOWN, f"no answer: {_reason(exc)}")
    finally:
        connection.close()
    if not 200 <= code <= 299:
        return Result(HealthState.UNKNOWN, f"answered HTTP {code}")
    if len(body) > BODY_LIMIT:
        return Result(HealthState.UNKNOWN, f"answered more than {BODY_LIMIT} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        return Result(HealthState.UNKNOWN, f"answered HTTP {code} without a JSON body")
    value = document.get(STATE_KEY) if isinstance(document, dict) else None
    if isinstance(value, str) and value.lower() == "healthy":
        return Result(HealthState.HEALTHY, f"answered HTTP {code}, {STATE_KEY} Healthy")
    if isinstance(value, str) and value.lower() == "unhealthy":
        return Result(HealthState.UNHEALTHY, f"answered HTTP {code}, {STATE_KEY} Unhealthy")
    return Result(
        HealthState.UNKNOWN, f'answered HTTP {code} without "{STATE_KEY}": Healthy or Unhealthy'
    )


@attrs.define
class StateMachine:
    """The reported state: `Initializing` until `numberOfProbes` consecutive healthy
    probes or the end of the grace period (then the last probe's state); from then on it
    changes only once `numberOfProbes` consecutive probes agree on another state."""

    probes: int
    state: HealthState = HealthState.INITIALIZING
    _recent: collections.deque[HealthState] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._recent = collections.deque(maxlen=self.probes)

    def observe(self, found: HealthState, grace_over: bool) -> HealthState:
        """Take one probe's state into account; the state to report now."""
        self._recent.append(found)
        agreed = len(self._recent) == self.probes and all(s == found for s in self._recent)
        if self.state is HealthState.INITIALIZING:
            if (found is HealthState.HEALTHY and agreed) or grace_over:
                self.state = found
        elif agreed:
            self.state = found
        return self.state
