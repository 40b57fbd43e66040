"""Naming one process of one boot (pid, start time, boot id), public so that the runtime
and plugins record and check the processes they start the same way."""

from __future__ import annotations

from ._procs import BOOT_ID_PATH as BOOT_ID_PATH
from ._procs import ProcessIdentity as ProcessIdentity
from ._procs import identify as identify
from ._procs import read_boot_id as read_boot_id
from ._procs import read_identity as read_identity
from ._procs import read_record as read_record
from ._procs import start_time as start_time
from ._procs import still_running as still_running

__all__ = [
    "BOOT_ID_PATH",
    "ProcessIdentity",
    "identify",
    "read_boot_id",
    "read_identity",
    "read_record",
    "start_time",
    "still_running",
]
