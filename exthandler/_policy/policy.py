"""The policy file (the reference agent's schema, docs/policy.md): a strict parser, and the
pure decision of what a goal state's extensions may do under a policy.

`parse_policy` refuses anything the schema does not say (unknown keys, wrong types, a
`policyVersion` newer than the one known), listing every problem as `FILE: $.path:
reason`. `refusals` turns a policy (or the problem that made it unusable, or processing
turned off) into data the target resolution takes: which extensions fail, with which
code and message; it reads nothing and runs nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from exthandler_sdk import ErrorCode
from exthandler_sdk.protocol import (
    HANDLER_NAME_PATTERN,
    POLICY_VERSION,
    disallowed_message,
    processing_disabled_message,
)

from exthandler._convert import json_kind

from .._errors import ExtHandlerError
from .._fs import UnsafeFileError, open_regular
from .._model import ExtensionGoal, HandlerName, RequestedState
from .._values import Value, field

__all__ = [
    "POLICY_FILE_LIMIT",
    "ExtensionRules",
    "Policy",
    "PolicyError",
    "PolicyState",
    "load_policy",
    "parse_policy",
    "read_admin_file",
    "refusals",
]

POLICY_FILE_LIMIT = 1 << 20
"""A policy file larger than this (1 MiB) is refused unread."""

_VERSION_RE = re.compile(r"\A(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,2}\Z")
_HANDLER_RE = re.compile(rf"\A{HANDLER_NAME_PATTERN}\Z")
_TOP_KEYS = frozenset({"policyVersion", "extensionPolicies"})
_POLICIES_KEYS = frozenset({"allowListedExtensionsOnly", "signatureRequired", "extensions"})
_EXTENSION_KEYS = frozenset({"signatureRequired", "runtimePolicy"})


class PolicyError(ExtHandlerError, ValueError):
    """A policy file that cannot be used; `problems` lists each as `FILE: $.path: reason`."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or ("$: invalid policy",)
        super().__init__("\n".join(self.problems))


class ExtensionRules(Value):
    """What the policy says of one extension: `signature_required` overrides the policy's
    own when set; `runtime_policy` is handed to the handler as is (None: not given)."""

    signature_required: bool | None = None
    runtime_policy: Mapping[str, Any] | None = None


class Policy(Value):
    """A valid policy file. `extensions` is keyed by the lower-case handler name."""

    path: str
    allow_listed_only: bool = False
    signature_required: bool = False
    extensions: Mapping[str, ExtensionRules] = field(default_factory=dict)

    def rules(self, handler: HandlerName) -> ExtensionRules | None:
        return self.extensions.get(handler.key)

    def allows(self, handler: HandlerName) -> bool:
        """Whether the extensions of `handler` may be processed at all."""
        return not self.allow_listed_only or handler.key in self.extensions

    def requires_signature(self, handler: HandlerName) -> bool:
        rules = self.rules(handler)
        if rules is not None and rules.signature_required is not None:
            return rules.signature_required
        return self.signature_required

    def runtime_policy(self, handler: HandlerName) -> Mapping[str, Any] | None:
        rules = self.rules(handler)
        return None if rules is None else rules.runtime_policy


def _version_key(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")] + [0, 0]
    return parts[0], parts[1], parts[2]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def parse_policy(data: bytes, *, where: str) -> Policy:
    """The policy `data` holds (`where` names it in problems and in the messages the
    runtime reports). PolicyError listing every problem otherwise."""
    problems: list[str] = []

    def problem(path: str, reason: str) -> None:
        problems.append(f"{where}: {path}: {reason}")

    try:
        document = json.loads(data.decode("utf-8-sig"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PolicyError([f"{where}: $: not valid JSON ({exc})"]) from None
    if not isinstance(document, dict):
        raise PolicyError([f"{where}: $: must be a JSON object, not {json_kind(document)}"])

    def unknown(obj: dict[str, Any], known: frozenset[str], path: str) -> None:
        for key in sorted(set(obj) - known):
            problem(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(known))})")

    def flag(obj: dict[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None and key not in obj:
            return None
        if not isinstance(value, bool):
            problem(f"{path}.{key}", f"must be true or false, not {json_kind(value)}")
            return None
        return value

    unknown(document, _TOP_KEYS, "$")
    version = document.get("policyVersion")
    if "policyVersion" not in document:
        problem("$.policyVersion", 'missing (e.g. "0.1.0")')
    elif not isinstance(version, str) or not _VERSION_RE.match(version):
        problem("$.policyVersion", f"must be a string major[.minor[.patch]], not {version!r}")
    elif _version_key(version) > _version_key(POLICY_VERSION):
        problem(
            "$.policyVersion",
            f"{version} is not supported (this runtime knows policy versions up to"
            f" {POLICY_VERSION})",
        )
    policies = document.get("extensionPolicies", {})
    allow_only = signature = None
    rules: dict[str, ExtensionRules] = {}
    if not isinstance(policies, dict):
        problem("$.extensionPolicies", f"must be an object, not {json_kind(policies)}")
    else:
        path = "$.extensionPolicies"
        unknown(policies, _POLICIES_KEYS, path)
        allow_only = flag(policies, "allowListedExtensionsOnly", path)
        signature = flag(policies, "signatureRequired", path)
        extensions = policies.get("extensions", {})
        if not isinstance(extensions, dict):
            problem(f"{path}.extensions", f"must be an object, not {json_kind(extensions)}")
        else:
            spelled: dict[str, str] = {}
            for name, body in extensions.items():
                here = f"{path}.extensions.{name}"
                if not _HANDLER_RE.match(name):
                    problem(here, "not an extension name 'Publisher.Type'")
                    continue
                if name.lower() in spelled:
                    problem(here, f"names the same extension as {spelled[name.lower()]!r}")
                    continue
                spelled[name.lower()] = name
                if not isinstance(body, dict):
                    problem(here, f"must be an object, not {json_kind(body)}")
                    continue
                unknown(body, _EXTENSION_KEYS, here)
                runtime = body.get("runtimePolicy")
                if "runtimePolicy" in body and not isinstance(runtime, dict):
                    problem(f"{here}.runtimePolicy", f"must be an object, not {json_kind(runtime)}")
                    runtime = None
                rules[name.lower()] = ExtensionRules(
                    signature_required=flag(body, "signatureRequired", here),
                    runtime_policy=runtime,
                )
    if problems:
        raise PolicyError(problems)
    return Policy(
        path=where,
        allow_listed_only=bool(allow_only),
        signature_required=bool(signature),
        extensions=rules,
    )


def read_admin_file(path: str | Path, cap: int) -> bytes:
    """The bytes of a file only the administrator may write (the policy, a trusted root):
    a regular file, not a link, of at most `cap` bytes, owned by root or by the runtime's
    user, and writable by nobody else. UnsafeFileError (an OSError) when it is not."""
    with open_regular(path) as file:
        info = file.info
        if info.st_uid not in (0, os.geteuid()):
            raise UnsafeFileError(
                path, f"owned by uid {info.st_uid}, neither root nor the runtime's user"
            )
        if info.st_mode & 0o022:
            raise UnsafeFileError(path, f"writable by other users (mode {info.st_mode & 0o777:o})")
        return file.read(cap)


def load_policy(path: str | Path) -> Policy:
    """Read and parse the policy file at `path` (see `read_admin_file`; at most
    `POLICY_FILE_LIMIT` bytes). PolicyError when it cannot be read or used."""
    where = str(path)
    try:
        data = read_admin_file(path, POLICY_FILE_LIMIT)
    except UnsafeFileError as exc:
        raise PolicyError([f"{where}: cannot be read: {exc.reason}"]) from None
    except OSError as exc:
        raise PolicyError([f"{where}: cannot be read: {exc.strerror or exc}"]) from None
    return parse_policy(data, where=where)


class PolicyState(Value):
    """What governs a pass: extension processing on or off (and how to turn it back on),
    and the policy, or why the configured one cannot be used (`error`)."""

    policy: Policy | None = None
    error: PolicyError | None = None
    extensions_enabled: bool = True
    # What turns processing back on, and where: for the "processing is disabled" message.
    enable_setting: str = "extensions_enabled=True"
    enable_where: str = "RuntimeConfig"

    def requires_signature(self, handler: HandlerName) -> bool:
        return self.policy is not None and self.policy.requires_signature(handler)

    def runtime_policy(self, handler: HandlerName) -> Mapping[str, Any] | None:
        return None if self.policy is None else self.policy.runtime_policy(handler)

    def blocks(self, handler: HandlerName) -> bool:
        """Whether nothing of `handler` may be fetched or run (its removal included)."""
        if not self.extensions_enabled or self.error is not None:
            return True
        return self.policy is not None and not self.policy.allows(handler)


def _code(ext: ExtensionGoal) -> ErrorCode:
    enable = ext.state is RequestedState.ENABLED
    return ErrorCode.ENABLE_FAILED if enable else ErrorCode.DISABLE_FAILED


def refusals(state: PolicyState, extensions: Iterable[ExtensionGoal]) -> dict[str, tuple[int, str]]:
    """The extensions `state` keeps from being processed: name -> (code, message). 1009
    for an extension to be enabled, 1010 for one to be disabled or uninstalled, with the
    reference agent's messages."""
    refused: dict[str, tuple[int, str]] = {}
    for ext in extensions:
        enable = ext.state is RequestedState.ENABLED
        handler = str(ext.handler)
        if not state.extensions_enabled:
            message = processing_disabled_message(handler, state.enable_setting, state.enable_where)
        elif state.error is not None:
            message = (
                f"Extension will not be processed: the policy file is invalid:"
                f" {'; '.join(state.error.problems)}"
            )
        elif state.policy is not None and not state.policy.allows(ext.handler):
            message = disallowed_message(handler, enable, state.policy.path)
        else:
            continue
        refused[ext.name] = (int(_code(ext)), message)
    return refused
