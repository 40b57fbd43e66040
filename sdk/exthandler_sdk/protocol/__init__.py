"""The extension protocol, sans I/O: names, limits, codes and the render/parse pair of
every file the agent and a handler exchange (docs/protocol.md).

Everything here is a pure function over bytes, strings and values: no file is opened,
nothing waits. The runtime and the SDK both call it, so that each rule of the protocol
stands in one place.
"""

# Every name is imported on first use (PEP 562): a module that needs the names of files
# does not pay for the parsers of manifests, events and settings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._codes import ErrorCode as ErrorCode
    from ._codes import Operation as Operation
    from ._codes import StatusLevel as StatusLevel
    from ._environment import HandlerEnvironment as HandlerEnvironment
    from ._environment import HandlerEnvironmentError as HandlerEnvironmentError
    from ._environment import ProtocolVariables as ProtocolVariables
    from ._environment import parse_handler_environment as parse_handler_environment
    from ._environment import read_protocol_variables as read_protocol_variables
    from ._environment import render_handler_environment as render_handler_environment
    from ._events import EVENT_FILE as EVENT_FILE
    from ._events import TelemetryEvent as TelemetryEvent
    from ._events import event_size as event_size
    from ._events import parse_event as parse_event
    from ._events import parse_event_file as parse_event_file
    from ._events import render_event as render_event
    from ._manifest import IN_PROCESS_KEY as IN_PROCESS_KEY
    from ._manifest import HandlerManifest as HandlerManifest
    from ._manifest import ManifestError as ManifestError
    from ._manifest import ResourceLimits as ResourceLimits
    from ._manifest import manifest_document as manifest_document
    from ._manifest import parse_manifest as parse_manifest
    from ._manifest import render_manifest as render_manifest
    from ._names import CERTIFICATE_KINDS as CERTIFICATE_KINDS
    from ._names import COMMAND_EXECUTION_LOG as COMMAND_EXECUTION_LOG
    from ._names import COMMAND_TIMEOUTS as COMMAND_TIMEOUTS
    from ._names import CONFIG_DIR as CONFIG_DIR
    from ._names import EVENT_FILE_MAX_SIZE as EVENT_FILE_MAX_SIZE
    from ._names import EVENT_MAX_SIZE as EVENT_MAX_SIZE
    from ._names import EVENT_MESSAGE_MAX_LENGTH as EVENT_MESSAGE_MAX_LENGTH
    from ._names import EVENT_WINDOW_SECONDS as EVENT_WINDOW_SECONDS
    from ._names import EVENTS_DIR as EVENTS_DIR
    from ._names import EVENTS_PER_WINDOW as EVENTS_PER_WINDOW
    from ._names import EXCERPT_LIMIT as EXCERPT_LIMIT
    from ._names import EXTENSION_NAME_PATTERN as EXTENSION_NAME_PATTERN
    from ._names import HANDLER_ENVIRONMENT_NAME as HANDLER_ENVIRONMENT_NAME
    from ._names import HANDLER_NAME_PATTERN as HANDLER_NAME_PATTERN
    from ._names import HANDLER_STATE_NAME as HANDLER_STATE_NAME
    from ._names import HEARTBEAT_MAX_AGE as HEARTBEAT_MAX_AGE
    from ._names import HEARTBEAT_NAME as HEARTBEAT_NAME
    from ._names import INTEGER as INTEGER
    from ._names import MANIFEST_NAME as MANIFEST_NAME
    from ._names import MRSEQ_NAME as MRSEQ_NAME
    from ._names import NOT_RUN as NOT_RUN
    from ._names import PACKAGE_SEPARATOR as PACKAGE_SEPARATOR
    from ._names import PACKAGE_SUFFIX as PACKAGE_SUFFIX
    from ._names import PROTOCOL_VARIABLES as PROTOCOL_VARIABLES
    from ._names import READ_LIMIT as READ_LIMIT
    from ._names import STATUS_DIR as STATUS_DIR
    from ._names import STATUS_FILE_LIMIT as STATUS_FILE_LIMIT
    from ._names import STATUS_MESSAGE_LIMIT as STATUS_MESSAGE_LIMIT
    from ._names import SUBSTATUS_FIELD_LIMIT as SUBSTATUS_FIELD_LIMIT
    from ._names import SUPPORTED_FEATURES as SUPPORTED_FEATURES
    from ._names import THUMBPRINT_PATTERN as THUMBPRINT_PATTERN
    from ._names import VERSION_PATTERN as VERSION_PATTERN
    from ._names import HandlerState as HandlerState
    from ._names import Variable as Variable
    from ._names import certificate_file_kind as certificate_file_kind
    from ._names import certificate_file_names as certificate_file_names
    from ._names import format_excerpt as format_excerpt
    from ._names import handler_state_file_name as handler_state_file_name
    from ._names import mrseq_file_name as mrseq_file_name
    from ._names import package_file_name as package_file_name
    from ._names import parse_settings_file_name as parse_settings_file_name
    from ._names import settings_file_name as settings_file_name
    from ._names import split_package_file_name as split_package_file_name
    from ._names import status_file_name as status_file_name
    from ._policy import POLICY_VERSION as POLICY_VERSION
    from ._policy import RUNTIME_POLICY_FILE as RUNTIME_POLICY_FILE
    from ._policy import SIGNATURE_SUFFIX as SIGNATURE_SUFFIX
    from ._policy import SIGNING_INFO_KEY as SIGNING_INFO_KEY
    from ._policy import SigningInfo as SigningInfo
    from ._policy import disallowed_message as disallowed_message
    from ._policy import policy_operation_word as policy_operation_word
    from ._policy import processing_disabled_message as processing_disabled_message
    from ._settings import RawSettings as RawSettings
    from ._settings import SettingsFileError as SettingsFileError
    from ._settings import parse_settings as parse_settings
    from ._settings import render_settings as render_settings
    from ._status import TRUNCATED_PREFIX as TRUNCATED_PREFIX
    from ._status import TRUNCATED_SUFFIX as TRUNCATED_SUFFIX
    from ._status import Heartbeat as Heartbeat
    from ._status import HeartbeatState as HeartbeatState
    from ._status import StatusReport as StatusReport
    from ._status import Substatus as Substatus
    from ._status import invalid_report as invalid_report
    from ._status import parse_heartbeat as parse_heartbeat
    from ._status import parse_status as parse_status
    from ._status import render_heartbeat as render_heartbeat
    from ._status import render_status as render_status
    from ._status import truncate_tail as truncate_tail
    from ._status import unknown_heartbeat as unknown_heartbeat
    from ._status import utc_timestamp as utc_timestamp
del TYPE_CHECKING

__all__ = [
    "CERTIFICATE_KINDS",
    "COMMAND_EXECUTION_LOG",
    "COMMAND_TIMEOUTS",
    "CONFIG_DIR",
    "EVENTS_DIR",
    "EVENTS_PER_WINDOW",
    "EVENT_FILE",
    "EVENT_FILE_MAX_SIZE",
    "EVENT_MAX_SIZE",
    "EVENT_MESSAGE_MAX_LENGTH",
    "EVENT_WINDOW_SECONDS",
    "EXCERPT_LIMIT",
    "EXTENSION_NAME_PATTERN",
    "ErrorCode",
    "HANDLER_ENVIRONMENT_NAME",
    "HANDLER_NAME_PATTERN",
    "HANDLER_STATE_NAME",
    "HEARTBEAT_MAX_AGE",
    "HEARTBEAT_NAME",
    "HandlerEnvironment",
    "HandlerEnvironmentError",
    "HandlerManifest",
    "HandlerState",
    "Heartbeat",
    "HeartbeatState",
    "INTEGER",
    "IN_PROCESS_KEY",
    "MANIFEST_NAME",
    "MRSEQ_NAME",
    "ManifestError",
    "NOT_RUN",
    "Operation",
    "PACKAGE_SEPARATOR",
    "PACKAGE_SUFFIX",
    "POLICY_VERSION",
    "PROTOCOL_VARIABLES",
    "ProtocolVariables",
    "READ_LIMIT",
    "RUNTIME_POLICY_FILE",
    "RawSettings",
    "ResourceLimits",
    "SIGNATURE_SUFFIX",
    "SIGNING_INFO_KEY",
    "STATUS_DIR",
    "STATUS_FILE_LIMIT",
    "STATUS_MESSAGE_LIMIT",
    "SUBSTATUS_FIELD_LIMIT",
    "SUPPORTED_FEATURES",
    "SettingsFileError",
    "SigningInfo",
    "StatusLevel",
    "StatusReport",
    "Substatus",
    "THUMBPRINT_PATTERN",
    "TRUNCATED_PREFIX",
    "TRUNCATED_SUFFIX",
    "TelemetryEvent",
    "VERSION_PATTERN",
    "Variable",
    "certificate_file_kind",
    "certificate_file_names",
    "disallowed_message",
    "event_size",
    "format_excerpt",
    "handler_state_file_name",
    "invalid_report",
    "manifest_document",
    "mrseq_file_name",
    "package_file_name",
    "parse_event",
    "parse_event_file",
    "parse_handler_environment",
    "parse_heartbeat",
    "parse_manifest",
    "parse_settings",
    "parse_settings_file_name",
    "parse_status",
    "policy_operation_word",
    "processing_disabled_message",
    "read_protocol_variables",
    "render_event",
    "render_handler_environment",
    "render_heartbeat",
    "render_manifest",
    "render_settings",
    "render_status",
    "settings_file_name",
    "split_package_file_name",
    "status_file_name",
    "truncate_tail",
    "unknown_heartbeat",
    "utc_timestamp",
]

# Public name -> the module of this package that defines it.
_HOMES = {
    "CERTIFICATE_KINDS": "_names",
    "COMMAND_EXECUTION_LOG": "_names",
    "COMMAND_TIMEOUTS": "_names",
    "CONFIG_DIR": "_names",
    "EVENTS_DIR": "_names",
    "EVENTS_PER_WINDOW": "_names",
    "EVENT_FILE": "_events",
    "EVENT_FILE_MAX_SIZE": "_names",
    "EVENT_MAX_SIZE": "_names",
    "EVENT_MESSAGE_MAX_LENGTH": "_names",
    "EVENT_WINDOW_SECONDS": "_names",
    "EXCERPT_LIMIT": "_names",
    "EXTENSION_NAME_PATTERN": "_names",
    "ErrorCode": "_codes",
    "HANDLER_ENVIRONMENT_NAME": "_names",
    "HANDLER_NAME_PATTERN": "_names",
    "HANDLER_STATE_NAME": "_names",
    "HEARTBEAT_MAX_AGE": "_names",
    "HEARTBEAT_NAME": "_names",
    "HandlerEnvironment": "_environment",
    "HandlerEnvironmentError": "_environment",
    "HandlerManifest": "_manifest",
    "HandlerState": "_names",
    "Heartbeat": "_status",
    "HeartbeatState": "_status",
    "INTEGER": "_names",
    "IN_PROCESS_KEY": "_manifest",
    "MANIFEST_NAME": "_names",
    "MRSEQ_NAME": "_names",
    "ManifestError": "_manifest",
    "NOT_RUN": "_names",
    "Operation": "_codes",
    "PACKAGE_SEPARATOR": "_names",
    "PACKAGE_SUFFIX": "_names",
    "POLICY_VERSION": "_policy",
    "PROTOCOL_VARIABLES": "_names",
    "ProtocolVariables": "_environment",
    "READ_LIMIT": "_names",
    "RUNTIME_POLICY_FILE": "_policy",
    "RawSettings": "_settings",
    "ResourceLimits": "_manifest",
    "SIGNATURE_SUFFIX": "_policy",
    "SIGNING_INFO_KEY": "_policy",
    "STATUS_DIR": "_names",
    "STATUS_FILE_LIMIT": "_names",
    "STATUS_MESSAGE_LIMIT": "_names",
    "SUBSTATUS_FIELD_LIMIT": "_names",
    "SUPPORTED_FEATURES": "_names",
    "SettingsFileError": "_settings",
    "SigningInfo": "_policy",
    "StatusLevel": "_codes",
    "StatusReport": "_status",
    "Substatus": "_status",
    "THUMBPRINT_PATTERN": "_names",
    "TRUNCATED_PREFIX": "_status",
    "TRUNCATED_SUFFIX": "_status",
    "TelemetryEvent": "_events",
    "VERSION_PATTERN": "_names",
    "Variable": "_names",
    "certificate_file_kind": "_names",
    "certificate_file_names": "_names",
    "disallowed_message": "_policy",
    "event_size": "_events",
    "format_excerpt": "_names",
    "handler_state_file_name": "_names",
    "invalid_report": "_status",
    "manifest_document": "_manifest",
    "mrseq_file_name": "_names",
    "package_file_name": "_names",
    "parse_event": "_events",
    "parse_event_file": "_events",
    "parse_handler_environment": "_environment",
    "parse_heartbeat": "_status",
    "parse_manifest": "_manifest",
    "parse_settings": "_settings",
    "parse_settings_file_name": "_names",
    "parse_status": "_status",
    "policy_operation_word": "_policy",
    "processing_disabled_message": "_policy",
    "read_protocol_variables": "_environment",
    "render_event": "_events",
    "render_handler_environment": "_environment",
    "render_heartbeat": "_status",
    "render_manifest": "_manifest",
    "render_settings": "_settings",
    "render_status": "_status",
    "settings_file_name": "_names",
    "split_package_file_name": "_names",
    "status_file_name": "_names",
    "truncate_tail": "_status",
    "unknown_heartbeat": "_status",
    "utc_timestamp": "_status",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{home}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
