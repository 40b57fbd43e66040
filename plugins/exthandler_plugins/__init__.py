"""Built-in extension handlers, registered through the `exthandler` entry-point group
exactly as a third-party plugin registers its own.

The handlers are named, not imported: the runtime imports a handler's class only when a
goal state or its state dir names that handler (see `exthandler_handler_paths`).
"""

from __future__ import annotations

from exthandler_sdk import hookimpl

__all__ = ["HANDLER_PATHS", "exthandler_handler_paths"]

HANDLER_PATHS = {
    "Microsoft.Azure.Extensions.CustomScript": "exthandler_plugins.customscript:CustomScript",
    "Microsoft.CPlat.Core.RunCommandHandlerLinux": "exthandler_plugins.runcommand:RunCommand",
    "Microsoft.OSTCExtensions.VMAccessForLinux": "exthandler_plugins.vmaccess:VMAccess",
    "Microsoft.ManagedServices.ApplicationHealthLinux": (
        "exthandler_plugins.apphealth:ApplicationHealth"
    ),
}
"""Each built-in handler's name -> its class, `module:QualifiedName`."""


@hookimpl
def exthandler_handler_paths() -> dict[str, str]:
    """The built-in handler classes, by handler name."""
    return dict(HANDLER_PATHS)
