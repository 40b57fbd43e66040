"""Keeping secrets out of messages: URLs lose their query string and credentials.

A SAS token travels in a URL's query string; user info may carry a password. Every URL a
message or log line mentions goes through `redact_url`, and free text that may quote a
URL (an exception from the HTTP library, say) through `redact_text`.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

__all__ = ["REDACTED", "RedactingFilter", "protect_http_logs", "redact_text", "redact_url"]

REDACTED = "<redacted>"
# A URL in free text: scheme, then anything up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`url` without user info, and with `?<redacted>` in place of any query string."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        # Unparsable: keep only what precedes anything that may be a secret.
        return url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2] + (
            f"?{REDACTED}" if "?" in url else ""
        )
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.query:
        return f"{base}?{REDACTED}"
    # A bare `?` stays: in text already redacted it precedes our own marker.
    return base + "?" if "?" in url.partition("#")[0] else base


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with every URL redacted; drops nothing.

    Installed on the HTTP library's loggers, which log each request's full URL (SAS token
    included) at INFO: an application that turns logging on would otherwise record them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def protect_http_logs(names: tuple[str, ...] = ("httpx", "httpcore")) -> None:
    """Put a RedactingFilter on the HTTP library's loggers, once."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
