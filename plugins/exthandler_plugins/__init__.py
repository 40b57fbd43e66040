"""Built-in extension handlers, registered through the `exthandler` entry-point group
exactly as a third-party plugin registers its own."""

from __future__ import annotations

from typing import Any

from exthandler_sdk import Handler, hookimpl

from .apphealth import ApplicationHealth
from .customscript import CustomScript
from .runcommand import RunCommand
from .vmaccess import VMAccess

__all__ = ["exthandler_register_handlers"]


@hookimpl
def exthandler_register_handlers() -> list[type[Handler[Any, Any]]]:
    """The built-in handler classes."""
    return [CustomScript, RunCommand, VMAccess, ApplicationHealth]
