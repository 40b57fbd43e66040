"""VM Access's settings: protected only, checked into one `Plan`.

The keys are those of the reference extension's protected settings. The same keys in
the public settings are refused (error 53) rather than ignored: a password there has
already travelled in the clear, and ignoring it would hide that. Every problem of both
is reported at once, one `path: reason` line each, the way the SDK reports settings that
do not fit their types.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import attrs
from exthandler_sdk import SettingsError

from ._sshkey import SshKey, parse_ssh_key

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "Plan",
    "VMAccessProtectedSettings",
    "VMAccessSettings",
    "check_username",
    "resolve",
]

PUBLIC = "settings"
PROTECTED = "protectedSettings"
MAX_PASSWORD_LENGTH = 1024
_USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@attrs.frozen
class VMAccessProtectedSettings:
    """The protected settings: every key optional, at least one thing to do."""

    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    ssh_key: str | None = None
    reset_ssh: bool = False
    remove_user: str | None = None
    expiration: str | None = None


@attrs.frozen
class VMAccessSettings:
    """The public settings: none are read; a protected key given here is refused."""

    username: Any = None
    password: Any = attrs.field(default=None, repr=False)
    ssh_key: Any = None
    reset_ssh: Any = None
    remove_user: Any = None
    expiration: Any = None


@attrs.frozen(kw_only=True)
class Plan:
    """What enable does: remove `remove_user`, create or update `username` (password, key,
    expiry, sudo), then reset sshd's configuration when `reset_ssh`."""

    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    key: SshKey | None = None
    expiration: datetime.date | None = None
    remove_user: str | None = None
    reset_ssh: bool = False


def check_username(name: str) -> str | None:
    """Why `name` is not a user name VM Access accepts, or None."""
    if not _USERNAME.fullmatch(name):
        return (
            "not a valid user name (1 to 32 characters: lowercase letters, digits, '_', '.' "
            "and '-', starting with a letter or '_')"
        )
    return None


def resolve(public: VMAccessSettings | None, protected: VMAccessProtectedSettings | None) -> Plan:
    """Check the settings; `SettingsError` (53) listing every problem otherwise."""
    errors: list[str] = []
    if public is not None:
        for field in attrs.fields(VMAccessSettings):
            if getattr(public, field.name) is not None:
                errors.append(
                    f"{PUBLIC}.{field.name}: VM Access reads its settings from the protected "
                    "settings only; move it there"
                )
    settings = protected if protected is not None else VMAccessProtectedSettings()
    username = _name(settings.username, "username", errors)
    remove_user = _name(settings.remove_user, "remove_user", errors)
    password = settings.password
    if password is not None:
        if not password:
            errors.append(f"{PROTECTED}.password: must not be empty")
        elif any(c in password for c in "\n\r\0"):
            errors.append(f"{PROTECTED}.password: must not hold a line break or a NUL")
        elif len(password) > MAX_PASSWORD_LENGTH:
            errors.append(f"{PROTECTED}.password: longer than {MAX_PASSWORD_LENGTH} characters")
    key = None
    if settings.ssh_key is not None:
        try:
            key = parse_ssh_key(settings.ssh_key)
        except ValueError as exc:
            errors.append(f"{PROTECTED}.ssh_key: {exc}")
    expiration = None
    if settings.expiration is not None:
        expiration = _date(settings.expiration, errors)
    if settings.username is None:
        for name, value in (
            ("password", settings.password),
            ("ssh_key", settings.ssh_key),
            ("expiration", settings.expiration),
        ):
            if value is not None:
                errors.append(f"{PROTECTED}.{name}: needs username (the user it is for)")
    elif settings.password is None and settings.ssh_key is None and settings.expiration is None:
        errors.append(f"{PROTECTED}.username: give password, ssh_key or expiration with it")
    if username is not None and username == remove_user:
        errors.append(f"{PROTECTED}.remove_user: the same user as username")
    if (
        settings.username is None
        and settings.remove_user is None
        and not settings.reset_ssh
        and not errors
    ):
        errors.append(
            f"{PROTECTED}: nothing to do: give username (with password, ssh_key or "
            "expiration), remove_user or reset_ssh"
        )
    if errors:
        raise SettingsError(errors)
    return Plan(
        username=username,
        password=password,
        key=key,
        expiration=expiration,
        remove_user=remove_user,
        reset_ssh=settings.reset_ssh,
    )


def _name(value: str | None, key: str, errors: list[str]) -> str | None:
    if value is None:
        return None
    problem = check_username(value)
    if problem is not None:
        errors.append(f"{PROTECTED}.{key}: {problem}")
        return None
    return value


def _date(value: str, errors: list[str]) -> datetime.date | None:
    problem = f"{PROTECTED}.expiration: expected a date as YYYY-MM-DD, got {value[:40]!r}"
    if not _DATE.fullmatch(value.strip()):
        errors.append(problem)
        return None
    try:
        return datetime.date.fromisoformat(value.strip())
    except ValueError:
        errors.append(problem)
        return None
