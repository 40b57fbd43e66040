"""The upgrade policy: which available version a request resolves to (pure)."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ._errors import NoEligibleVersionError
from ._model import HandlerName, Version

__all__ = ["Change", "classify", "select_version"]


def select_version(
    request: Version,
    available: Iterable[Version],
    *,
    auto_upgrade_minor: bool = False,
    use_exact_version: bool = False,
    handler: HandlerName | None = None,
) -> Version:
    """The version a request resolves to.

    - `use_exact_version`: exactly the requested version (missing parts count as 0);
    - otherwise hotfix upgrades are forced: the highest `M.m.*` at or above the request;
    - `auto_upgrade_minor` opts in to minor upgrades: the highest `M.*` at or above it;
    - a major version is never crossed.
    Raises NoEligibleVersionError naming what is available when nothing qualifies.
    """
    versions = sorted(set(available))
    if use_exact_version:
        eligible = [v for v in versions if v == request]
    elif auto_upgrade_minor:
        eligible = [v for v in versions if v.major == request.major and v >= request]
    else:
        eligible = [
            v
            for v in versions
            if (v.major, v.minor) == (request.major, request.minor) and v >= request
        ]
    if eligible:
        return eligible[-1]
    rule = (
        "exactly"
        if use_exact_version
        else f"{request.major}.* at or above"
        if auto_upgrade_minor
        else f"{request.major}.{request.minor}.* at or above"
    )
    offered = ", ".join(str(v) for v in versions) or "none"
    who = f"{handler} " if handler else ""
    raise NoEligibleVersionError(
        f"no version of {who}matches {rule} {request} (available: {offered})"
    )


class Change(enum.Enum):
    """How a target version relates to the installed one."""

    INSTALL = "install"
    SAME = "same"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"


def classify(installed: Version | None, target: Version) -> Change:
    """Whether moving from `installed` to `target` is a fresh install, no-op, up- or downgrade.

    On a downgrade the protocol runs the installed (higher) version's update command.
    """
    if installed is None:
        return Change.INSTALL
    if installed == target:
        return Change.SAME
    return Change.UPGRADE if target > installed else Change.DOWNGRADE
