"""The upgrade policy: which available version a request resolves to (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import NoEligibleVersionError
from .._model import HandlerName, Version

__all__ = ["select_version"]


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
