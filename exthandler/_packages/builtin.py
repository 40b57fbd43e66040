"""Handlers that come with a distribution of their own, known here by name only.

When a goal state asks for one of them and no source offers it, the failure says what to
install. The runtime never imports these distributions (their handlers register through
entry points like any plugin's): this table is all it knows of them.
"""

from __future__ import annotations

from .._model import HandlerName

__all__ = ["BUILTIN_HANDLERS", "missing_handler_hint"]

BUILTIN_HANDLERS: dict[str, tuple[str, str]] = {
    "Microsoft.Azure.Extensions.CustomScript": ("exthandler-plugins", "exthandler[plugins]"),
    "Microsoft.CPlat.Core.RunCommandHandlerLinux": ("exthandler-plugins", "exthandler[plugins]"),
    "Microsoft.OSTCExtensions.VMAccessForLinux": ("exthandler-plugins", "exthandler[plugins]"),
    "Microsoft.ManagedServices.ApplicationHealthLinux": (
        "exthandler-plugins",
        "exthandler[plugins]",
    ),
}
"""Handler name -> (the distribution that provides it, the requirement that installs it)."""

_BY_KEY = {name.lower(): provider for name, provider in BUILTIN_HANDLERS.items()}


def missing_handler_hint(handler: HandlerName) -> str:
    """What to add to "`handler` is in no source" when it is a known built-in handler: the
    distribution to install (`; ...`); empty for any other handler."""
    provider = _BY_KEY.get(handler.key)
    if provider is None:
        return ""
    distribution, requirement = provider
    return f'; it is a built-in handler of {distribution}: pip install "{requirement}"'
