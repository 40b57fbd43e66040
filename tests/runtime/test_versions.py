"""The upgrade policy (docs/concepts.md, "Which version runs"), one row per rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exthandler import NoEligibleVersionError, Version, VersionError, select_version
from exthandler._model import HandlerName

V = Version.parse
AVAILABLE = ["1.0.0", "1.0.5", "1.1.0", "1.1.2", "1.3", "2.0.0", "2.1.0.7", "3.0"]


@pytest.mark.parametrize(
    ("request_", "auto_minor", "exact", "expected"),
    [
        # hotfix upgrades are forced: highest M.m.* at or above the request
        ("1.0", False, False, "1.0.5"),
        ("1.0.0", False, False, "1.0.5"),
        ("1.1", False, False, "1.1.2"),
        ("1.1.1", False, False, "1.1.2"),
        ("2.1", False, False, "2.1.0.7"),
        # minor upgrades are opt-in: highest M.* at or above the request
        ("1.0", True, False, "1.3"),
        ("1.1.2", True, False, "1.3"),
        ("2.0", True, False, "2.1.0.7"),
        # a major version is never crossed
        ("1.3", True, False, "1.3"),
        ("2.1.0.7", True, False, "2.1.0.7"),
        # exact pins win over both flags; missing parts count as 0
        ("1.0.0", True, True, "1.0.0"),
        ("1.0", False, True, "1.0.0"),
        ("3.0.0.0", True, True, "3.0"),
    ],
)
def test_policy_rule(request_: str, auto_minor: bool, exact: bool, expected: str) -> None:
    chosen = select_version(
        V(request_),
        [V(v) for v in AVAILABLE],
        auto_upgrade_minor=auto_minor,
        use_exact_version=exact,
    )
    assert chosen == V(expected)
    assert str(chosen) == expected  # the available spelling, which names the handler dir


@pytest.mark.parametrize(
    ("request_", "auto_minor", "exact", "fragment"),
    [
        ("1.2", False, False, "1.2.* at or above 1.2"),  # no 1.2.x; 1.3 needs the opt-in
        ("1.4", True, False, "1.* at or above 1.4"),  # 2.0 would cross a major
        ("1.0.6", False, False, "1.0.* at or above 1.0.6"),  # below-request hotfixes don't count
        ("1.0.1", False, True, "exactly 1.0.1"),
        ("4.0", True, False, "4.* at or above"),
    ],
)
def test_no_eligible_version(request_: str, auto_minor: bool, exact: bool, fragment: str) -> None:
    with pytest.raises(NoEligibleVersionError) as info:
        select_version(
            V(request_),
            [V(v) for v in AVAILABLE],
            auto_upgrade_minor=auto_minor,
            use_exact_version=exact,
            handler=HandlerName.parse("Contoso.Examples.Hello"),
        )
    assert fragment in str(info.value)
    assert "Contoso.Examples.Hello" in str(info.value)
    assert "available: 1.0.0, 1.0.5" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_nothing_available_says_none() -> None:
    with pytest.raises(NoEligibleVersionError, match=r"available: none"):
        select_version(V("1.0"), [])


@pytest.mark.parametrize("text", ["1", "1.", ".1", "1.2.3.4.5", "a.b", "1.-2", "", " 1.0", "1.0 "])
def test_invalid_versions(text: str) -> None:
    with pytest.raises(VersionError, match="is not a version"):
        V(text)


def test_version_ordering_pads_with_zero() -> None:
    assert V("2.1") == V("2.1.0.0")
    assert hash(V("2.1")) == hash(V("2.1.0"))
    assert V("2.1") < V("2.1.0.1") < V("2.2") < V("10.0")
    assert sorted([V("1.10"), V("1.9"), V("1.9.1")]) == [V("1.9"), V("1.9.1"), V("1.10")]
    assert V("1.0") != "1.0"
    assert (V("1.0").major, V("1.2").minor) == (1, 2)


versions = st.lists(st.integers(0, 20), min_size=2, max_size=4).map(
    lambda parts: Version(tuple(parts))
)


@given(request=versions, available=st.lists(versions, max_size=12), minor=st.booleans())
def test_policy_properties(request: Version, available: list[Version], minor: bool) -> None:
    """Whatever is chosen is available, at or above the request, and in the same major."""
    try:
        chosen = select_version(request, available, auto_upgrade_minor=minor)
    except NoEligibleVersionError:
        assert not [
            v
            for v in available
            if v >= request and v.major == request.major and (minor or v.minor == request.minor)
        ]
        return
    assert chosen in available
    assert chosen >= request
    assert chosen.major == request.major
    if not minor:
        assert chosen.minor == request.minor
    assert all(
        not (v > chosen and v.major == chosen.major and (minor or v.minor == chosen.minor))
        for v in available
    )
