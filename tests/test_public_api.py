"""The public surface is deliberate: a change to it must change this test."""

from __future__ import annotations

import types

import exthandler_plugins
import exthandler_sdk
import pytest

import exthandler
import exthandler.pytest_plugin
import exthandler.testing

SURFACES: dict[types.ModuleType, list[str]] = {
    exthandler: [
        "CommandRequest",
        "CommandResult",
        "DirectoryRepository",
        "EncryptedProtectedSettings",
        "EventStream",
        "EventsDropped",
        "Executor",
        "ExtHandlerError",
        "ExtensionChanged",
        "ExtensionGoal",
        "ExtensionView",
        "GoalState",
        "GoalStateError",
        "GoalStateFormat",
        "HandlerManifest",
        "HandlerName",
        "Installed",
        "InstanceView",
        "NoEligibleVersionError",
        "PackageError",
        "PackageRef",
        "PackageSource",
        "PassFinished",
        "PassStarted",
        "PlainProtectedSettings",
        "Plan",
        "PlannedStep",
        "RepositorySet",
        "RequestedState",
        "Runtime",
        "RuntimeConfig",
        "StateDirLockedError",
        "StatusView",
        "StepFinished",
        "StepResult",
        "StepStarted",
        "SubstatusView",
        "Version",
        "VersionError",
        "Workspace",
        "__version__",
        "install_zip",
        "load_goal_state",
        "make_plugin_manager",
        "open_runtime",
        "parse_goal_state",
        "parse_manifest",
        "read_instance_view",
        "select_version",
    ],
    exthandler_sdk: [
        "Context",
        "Detached",
        "ErrorCode",
        "ExtHandlerError",
        "Handler",
        "HandlerEnvironment",
        "HandlerError",
        "Operation",
        "SettingsError",
        "StatusLevel",
        "Substatus",
        "hookimpl",
        "load_handler",
        "run_operation",
    ],
    exthandler.testing: [
        "Agent",
        "CommandRecord",
        "Fault",
        "FaultKind",
        "Harness",
        "HarnessResult",
        "Identity",
        "KilledApply",
        "LifecyclePhase",
        "LifecycleReport",
        "SigningCA",
        "Status",
        "SubstatusEntry",
        "TestingUsageError",
        "check_lifecycle",
        "faulty_class",
        "faulty_package",
        "validate_heartbeat",
        "validate_status",
    ],
    exthandler_plugins: ["HANDLER_PATHS", "exthandler_handler_paths"],
    exthandler.pytest_plugin: [
        "exthandler_agent",
        "exthandler_certificate_dir",
        "exthandler_harness",
        "exthandler_signing_ca",
    ],
}
# Modules whose only job is to re-export: every public name they hold is in __all__.
CURATED = (exthandler, exthandler_sdk, exthandler.testing)


@pytest.mark.parametrize("module", list(SURFACES), ids=lambda module: module.__name__)
def test_the_exact_surface(module: types.ModuleType) -> None:
    assert module.__all__ == SURFACES[module]
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module", CURATED, ids=lambda module: module.__name__)
def test_nothing_public_beyond_the_surface(module: types.ModuleType) -> None:
    # dir() and getattr(), not vars(): the curated modules import a name on first use.
    public = {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }
    assert public == set(module.__all__) - {"__version__"}


def test_errors_share_one_root_with_meaningful_mix_ins() -> None:
    assert issubclass(exthandler.GoalStateError, exthandler_sdk.ExtHandlerError)
    assert issubclass(exthandler.GoalStateError, ValueError)
    assert issubclass(exthandler.NoEligibleVersionError, LookupError)
    assert issubclass(exthandler.testing.TestingUsageError, exthandler_sdk.ExtHandlerError)
    assert exthandler.ExtHandlerError is exthandler_sdk.ExtHandlerError


def test_error_codes_are_the_protocols() -> None:
    codes = exthandler_sdk.ErrorCode
    assert codes.for_operation(exthandler_sdk.Operation.ENABLE) == 1009
    assert codes.for_operation(exthandler_sdk.Operation.UNINSTALL) == 1000
    assert (codes.COMMAND_TIMEOUT, codes.STATUS_INVALID, codes.CONFIGURATION) == (1011, 1012, 53)
    assert exthandler_sdk.Operation.UPDATE.manifest_key == "updateCommand"
    assert exthandler_sdk.Operation.ENABLE.display_name == "Enable"
    assert exthandler_sdk.StatusLevel.SUCCESS.terminal
    assert not exthandler_sdk.StatusLevel.TRANSITIONING.terminal
    error = exthandler_sdk.HandlerError(53, "bad")
    assert (error.code, error.message, repr(error)) == (53, "bad", "HandlerError(53, 'bad')")
