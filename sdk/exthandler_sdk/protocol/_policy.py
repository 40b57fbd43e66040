"""Extension policy and package signatures (docs/policy.md): the facts an administrator's
policy, a publisher's signed package and a handler share, and the reference agent's words
for an extension the policy keeps from running."""

from __future__ import annotations

from typing import Any

from .._values import Value

__all__ = [
    "POLICY_VERSION",
    "RUNTIME_POLICY_FILE",
    "SIGNATURE_SUFFIX",
    "SIGNING_INFO_KEY",
    "SigningInfo",
    "disallowed_message",
    "policy_operation_word",
    "processing_disabled_message",
]

POLICY_VERSION = "0.1.0"
"""The highest `policyVersion` of a policy file this protocol knows."""

RUNTIME_POLICY_FILE = "runtimePolicy.json"
"""The file, in a handler dir's config dir, holding the policy's `runtimePolicy` for the
handler (a JSON value, the handler's to interpret); absent when the policy gives none."""

SIGNATURE_SUFFIX = ".sig"
"""Beside `Publisher.Type__Version.zip`, its `.zip.sig`: the base64 of the DER CMS detached
signature of the zip, the package's `encodedSignature` when the goal state gives none."""

SIGNING_INFO_KEY = "signingInfo"
"""The key of a signed package's HandlerManifest.json naming what was signed."""


class SigningInfo(Value):
    """`signingInfo` of a signed package's manifest: the handler's type, publisher and
    version the publisher signed it as (None: missing or not a string)."""

    type: str | None = None
    publisher: str | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> SigningInfo:
        """Read a manifest's `signingInfo` value; what is not a string is left None."""
        fields = value if isinstance(value, dict) else {}

        def text(key: str) -> str | None:
            found = fields.get(key)
            return found if isinstance(found, str) else None

        return cls(type=text("type"), publisher=text("publisher"), version=text("version"))

    def to_json(self) -> dict[str, str | None]:
        return {"type": self.type, "publisher": self.publisher, "version": self.version}

    def mismatches(self, publisher: str, type_: str, version: str) -> list[str]:
        """What differs from the handler `publisher.type_` at `version` (compared
        case-insensitively, as the reference agent does); empty when it matches."""
        found = self.to_json()
        wanted = {"publisher": publisher, "type": type_, "version": version}
        problems: list[str] = []
        for key in ("publisher", "type", "version"):
            have = found[key]
            if have is None or have.lower() != wanted[key].lower():
                problems.append(f"{key} is {have!r}, not {wanted[key]!r}")
        return problems


def policy_operation_word(enable: bool) -> str:
    """The word the reference agent's policy messages use: `run` for an extension to be
    enabled, `uninstall` for one to be disabled or uninstalled (users never see disable)."""
    return "run" if enable else "uninstall"


def disallowed_message(handler: str, enable: bool, policy_path: str) -> str:
    """The reference agent's message for an extension the policy does not allow."""
    op = policy_operation_word(enable)
    return (
        f"Extension will not be processed: failed to {op} extension '{handler}' because it"
        f" is not specified as an allowed extension. To {op}, add the extension to the list"
        f" of allowed extensions in the policy file ('{policy_path}')."
    )


def processing_disabled_message(handler: str, setting: str, where: str) -> str:
    """The reference agent's message for every extension while extension processing is
    turned off; `setting` is what turns it back on, `where` where that is set."""
    return (
        f"Extension '{handler}' will not be processed since extension processing is"
        f" disabled. To enable extension processing, set {setting} in '{where}'"
    )
