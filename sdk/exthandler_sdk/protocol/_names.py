"""Names and numbers of the protocol: files, environment variables, limits, timeouts and
the handler states the agent persists (docs/protocol.md)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

from ._codes import Operation

__all__ = [
    "CERTIFICATE_KINDS",
    "THUMBPRINT_PATTERN",
    "certificate_file_kind",
    "certificate_file_names",
    "COMMAND_EXECUTION_LOG",
    "COMMAND_TIMEOUTS",
    "CONFIG_DIR",
    "EVENTS_DIR",
    "EXTENSION_NAME_PATTERN",
    "EVENTS_PER_WINDOW",
    "EVENT_FILE_MAX_SIZE",
    "EVENT_MAX_SIZE",
    "EVENT_MESSAGE_MAX_LENGTH",
    "EVENT_WINDOW_SECONDS",
    "EXCERPT_LIMIT",
    "HANDLER_ENVIRONMENT_NAME",
    "HANDLER_NAME_PATTERN",
    "HANDLER_STATE_NAME",
    "HEARTBEAT_MAX_AGE",
    "HEARTBEAT_NAME",
    "HandlerState",
    "MANIFEST_NAME",
    "MRSEQ_NAME",
    "NOT_RUN",
    "PACKAGE_SEPARATOR",
    "PACKAGE_SUFFIX",
    "PROTOCOL_VARIABLES",
    "READ_LIMIT",
    "STATUS_DIR",
    "STATUS_FILE_LIMIT",
    "STATUS_MESSAGE_LIMIT",
    "SUBSTATUS_FIELD_LIMIT",
    "SUPPORTED_FEATURES",
    "INTEGER",
    "VERSION_PATTERN",
    "Variable",
    "format_excerpt",
    "handler_state_file_name",
    "mrseq_file_name",
    "package_file_name",
    "parse_settings_file_name",
    "settings_file_name",
    "split_package_file_name",
    "status_file_name",
]

# Files of a handler dir and of its log dir (docs/protocol.md#on-disk).
MANIFEST_NAME = "HandlerManifest.json"
HANDLER_ENVIRONMENT_NAME = "HandlerEnvironment.json"
CONFIG_DIR = "config"
STATUS_DIR = "status"
HEARTBEAT_NAME = "heartbeat.log"
HANDLER_STATE_NAME = "HandlerState"
MRSEQ_NAME = "mrseq"
COMMAND_EXECUTION_LOG = "CommandExecution.log"
EVENTS_DIR = "events"
PACKAGE_SEPARATOR = "__"
PACKAGE_SUFFIX = ".zip"


def settings_file_name(extension: str | None, sequence: int) -> str:
    """`<seq>.settings`, or `<ext>.<seq>.settings` for a multi-config extension."""
    return f"{sequence}.settings" if extension is None else f"{extension}.{sequence}.settings"


_SETTINGS_FILE = re.compile(r"\A(?:(.+)\.)?([0-9]+)\.settings\Z")


def parse_settings_file_name(name: str) -> tuple[str | None, int] | None:
    """The (extension, sequence) a settings file name stands for (extension None for
    `<seq>.settings`), or None if `name` is not one."""
    match = _SETTINGS_FILE.match(name)
    return None if match is None else (match.group(1), int(match.group(2)))


def status_file_name(extension: str | None, sequence: int) -> str:
    """`<seq>.status`, or `<ext>.<seq>.status` for a multi-config extension."""
    return f"{sequence}.status" if extension is None else f"{extension}.{sequence}.status"


def handler_state_file_name(extension: str | None) -> str:
    """`HandlerState`, or `<ext>.HandlerState` for a multi-config extension."""
    return HANDLER_STATE_NAME if extension is None else f"{extension}.{HANDLER_STATE_NAME}"


def mrseq_file_name(extension: str | None) -> str:
    """`mrseq`, or `<ext>.mrseq` for a multi-config extension."""
    return MRSEQ_NAME if extension is None else f"{extension}.{MRSEQ_NAME}"


def package_file_name(handler: str, version: str) -> str:
    """`Publisher.Type__Version.zip`, the name the reference agent gives packages."""
    return f"{handler}{PACKAGE_SEPARATOR}{version}{PACKAGE_SUFFIX}"


def split_package_file_name(name: str) -> tuple[str, str] | None:
    """The (handler, version) texts of a package file name, unchecked; None if `name` does
    not have the shape `<handler>__<version>.zip`."""
    if not name.endswith(PACKAGE_SUFFIX):
        return None
    # Versions never contain '_', so the last separator splits name from version even
    # when the type itself ends in '_'.
    handler, separator, version = name[: -len(PACKAGE_SUFFIX)].rpartition(PACKAGE_SEPARATOR)
    return (handler, version) if separator else None


CERTIFICATE_KINDS = ("crt", "prv")
"""The suffixes of the certificate/key pair that decrypts protected settings (PEM files
named `<THUMBPRINT>.crt` and `<THUMBPRINT>.prv` in the parent of the handler dirs)."""
THUMBPRINT_PATTERN = r"[0-9A-Fa-f]{40}"
"""A SHA-1 certificate thumbprint (the protocol writes it in upper case)."""


def certificate_file_names(thumbprint: str) -> tuple[str, str]:
    """`<THUMBPRINT>.crt` and `<THUMBPRINT>.prv`, the names the runtime writes."""
    return f"{thumbprint}.crt", f"{thumbprint}.prv"


def certificate_file_kind(name: str, thumbprint: str) -> str | None:
    """`crt` or `prv` when `name` is one of the pair of `thumbprint` (upper case), whatever
    the case of the name; None otherwise."""
    stem, dot, suffix = name.rpartition(".")
    kind = suffix.lower()
    return kind if dot and kind in CERTIFICATE_KINDS and stem.upper() == thumbprint else None


HANDLER_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_\-]*)+"
"""`Publisher.Type`: two or more dot-separated segments (the publisher may hold dots)."""
VERSION_PATTERN = r"[0-9]+(?:\.[0-9]+){1,3}"
"""A handler version: 2 to 4 dotted non-negative integers."""
EXTENSION_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}"
"""An extension's name (it becomes part of file names, so the alphabet is safe)."""


class Variable(enum.StrEnum):
    """The environment variables of every command (docs/protocol.md#command-environment)."""

    SEQUENCE_NUMBER = "ConfigSequenceNumber"
    EXTENSION_NAME = "ConfigExtensionName"
    EXTENSION_PATH = "AZURE_GUEST_AGENT_EXTENSION_PATH"
    EXTENSION_VERSION = "AZURE_GUEST_AGENT_EXTENSION_VERSION"
    SUPPORTED_FEATURES = "AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES"
    UPDATE_TO_VERSION = "VERSION"
    UPDATING_FROM_VERSION = "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION"
    DISABLE_EXIT_CODE = "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE"
    DISABLE_EXIT_CODES = "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODES_MULTIPLE_EXTENSIONS"
    UNINSTALL_EXIT_CODE = "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE"


PROTOCOL_VARIABLES = frozenset(str(variable) for variable in Variable)
"""The names of the protocol's environment variables (`Variable`)."""
SUPPORTED_FEATURES = '[{"Key":"ExtensionTelemetryPipeline","Value":"1.0"}]'
"""The value of `AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES`."""
NOT_RUN = "NOT_RUN"
"""An exit-code variable's value when the command did not run."""


class HandlerState(enum.StrEnum):
    """The handler states the protocol persists in `config/HandlerState`."""

    NOT_INSTALLED = "NotInstalled"
    INSTALLED = "Installed"
    ENABLED = "Enabled"
    FAILED_UPGRADE = "FailedUpgrade"


COMMAND_TIMEOUTS: Mapping[Operation, float] = {
    Operation.INSTALL: 900.0,
    Operation.UPDATE: 900.0,
    Operation.DISABLE: 900.0,
    Operation.ENABLE: 300.0,
    Operation.UNINSTALL: 300.0,
}
"""The reference agent's command timeouts, in seconds (docs/protocol.md, "Timeouts ...")."""

READ_LIMIT = 4 * 1024 * 1024
"""Bytes read at most from any one file a handler controls; a larger file is left unread."""

STATUS_FILE_LIMIT = 128 * 1024
"""Size of a status file above which its texts are cut (the reference agent's limit)."""
STATUS_MESSAGE_LIMIT = 1024
"""The longest top-level message kept in a status file that is cut."""
SUBSTATUS_FIELD_LIMIT = 10 * 1024
"""The longest substatus name or message kept in a status file that is cut."""
HEARTBEAT_MAX_AGE = 600.0
"""Seconds after which a heartbeat file no longer counts: the handler is Unresponsive."""

EXCERPT_LIMIT = 3200
"""Characters of output the reference agent keeps for a command, headers included."""

EVENT_FILE_MAX_SIZE = 4 * 1024 * 1024
"""Event files larger than this (bytes) are deleted unread."""
EVENT_MESSAGE_MAX_LENGTH = 3072
"""Characters of an event's `Message` kept."""
EVENT_MAX_SIZE = 6 * 1024
"""Events whose JSON (see `event_size`) is longer than this are dropped."""
EVENTS_PER_WINDOW = 360
"""Events collected at most per extension in any `EVENT_WINDOW_SECONDS`."""
EVENT_WINDOW_SECONDS = 300.0


def format_excerpt(stdout: str, stderr: str, *, limit: int = EXCERPT_LIMIT) -> str:
    """`[stdout]\\n<tail>\\n\\n[stderr]\\n<tail>` in at most `limit` characters.

    The budget is split evenly; what one stream does not use goes to the other, and each
    keeps its tail (the end of the output is where the error usually is).
    """
    template = "[stdout]\n{}\n\n[stderr]\n{}"
    budget = max(0, limit - len(template.format("", "")))
    out_len = min(len(stdout), max(budget // 2, budget - len(stderr)))
    err_len = min(len(stderr), budget - out_len)
    return template.format(_last(stdout, out_len), _last(stderr, err_len))


def _last(text: str, count: int) -> str:
    return text[len(text) - count :]


INTEGER = re.compile(r"[+-]?[0-9]+")
"""A decimal integer as the protocol's string-typed numbers spell it."""
