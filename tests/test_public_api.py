"""The public surface is deliberate: a change to it must change this test."""

from __future__ import annotations

import exthandler_plugins
import exthandler_sdk

import exthandler


def test_runtime_surface() -> None:
    assert exthandler.__all__ == sorted(exthandler.__all__)
    for name in exthandler.__all__:
        assert getattr(exthandler, name) is not None, name
    assert {
        "GoalState",
        "GoalStateError",
        "HandlerName",
        "Version",
        "load_goal_state",
        "select_version",
    } <= set(exthandler.__all__)


def test_sdk_surface() -> None:
    assert exthandler_sdk.__all__ == sorted(exthandler_sdk.__all__)
    assert {"ExtHandlerError", "HandlerError", "ErrorCode", "Operation"} <= set(
        exthandler_sdk.__all__
    )
    assert issubclass(exthandler.GoalStateError, exthandler_sdk.ExtHandlerError)
    assert issubclass(exthandler.GoalStateError, ValueError)
    assert issubclass(exthandler.NoEligibleVersionError, LookupError)


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


def test_plugins_distribution_imports() -> None:
    assert exthandler_plugins.__all__ == ["exthandler_register_handlers"]
