"""Uploading a stream of the script's output to `outputBlobUri`/`errorBlobUri`.

The SDK's blob writer (`exthandler_sdk.blob`, the standard library alone, so it works
packaged) does the requests. A stream is uploaded when the script ends, as an append blob
(created anew, replacing a blob of that name, then appended in blocks of at most 4 MiB
read from the output file); when the store refuses that, as a block blob holding the
stream's last `BLOCK_LIMIT` bytes. Answers that may change (no answer, a timeout, 408, 429,
5xx) are tried again, `ATTEMPTS` times in all. What fails is returned as a message that
names the URL without its SAS token.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from exthandler_sdk import blob

from ._settings import BlobTarget

__all__ = ["ATTEMPTS", "BLOCK_LIMIT", "upload"]

ATTEMPTS = 3
BACKOFF = 1.0
"""Seconds before the second attempt; doubled for each later one."""
BLOCK_LIMIT = 64 * 1024 * 1024
"""The most of a stream a block blob gets (its tail)."""
_TEXT = "text/plain; charset=utf-8"


def _append(url: str, path: Path) -> None:
    blob.create_append_blob(url, content_type=_TEXT)
    with path.open("rb") as stream:
        while chunk := stream.read(blob.APPEND_BLOCK_LIMIT):
            blob.append_block(url, chunk)


def _block(url: str, path: Path) -> None:
    with path.open("rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - BLOCK_LIMIT))
        data = stream.read()
    blob.put_block_blob(url, data, content_type=_TEXT)


def _with_retries(kind: str, target: BlobTarget, path: Path) -> str | None:
    """Upload as `kind` ("append" or "block"); None, or why it failed."""
    write = _append if kind == "append" else _block
    delay = BACKOFF
    for attempt in range(1, ATTEMPTS + 1):
        try:
            write(target.url, path)
        except blob.BlobError as exc:
            if not exc.retryable or attempt == ATTEMPTS:
                return blob.redact_text(exc.message)
            time.sleep(delay)
            delay *= 2
        except OSError as exc:  # the output file itself
            return f"cannot read {path.name}: {exc.strerror}"
        else:
            return None
    return None  # pragma: no cover (the loop always returns)


def upload(target: BlobTarget, path: Path) -> str | None:
    """Upload the file `path` to `target`; None when it is there, else why not (an
    append blob first, then a block blob; blocking: run it in a thread)."""
    problem = _with_retries("append", target, path)
    if problem is None:
        return None
    fallback = _with_retries("block", target, path)
    if fallback is None:
        return None
    return f"{target.redacted}: {fallback} (as an append blob: {problem})"
