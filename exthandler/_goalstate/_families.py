"""Agent families in goal states: what the agent's self-update reads (docs/operating.md).

- Native JSON: `"agentFamilies": [{"name": "Prod", "version": "1.2.3", "uris": [...]}]`,
  checked strictly like the rest of the document (see `_native.py`).
- ExtensionsConfig XML: `GAFamilies/GAFamily` with `Name`, `Version` and `Uris/Uri`
  elements (under `GuestAgentExtension`, or directly under `Extensions`).
- vmSettings: `gaFamilies: [{"name", "version", "uris"}]`.

As everywhere in the wire formats, what cannot be used is ignored: a family without a
usable name is skipped, a version that does not parse counts as none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from exthandler._errors import VersionError
from exthandler._model import AgentFamily, Version

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

__all__ = ["check_family_name", "json_families", "xml_families"]

_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}\Z")


def check_family_name(value: str) -> str:
    """`value` when it can name an agent family (a word of letters, digits, `_` and `-`,
    at most 64 characters, the last part of its packages' handler name); else ValueError."""
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not an agent family name (letters, digits, '_' and '-', no dots)"
        )
    return value


def _version(text: object) -> Version | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return Version.parse(text.strip())
    except (VersionError, ValueError):
        return None


def _family(name: object, version: object, uris: list[object]) -> AgentFamily | None:
    if not isinstance(name, str):
        return None
    try:
        check_family_name(name.strip())
    except ValueError:
        return None
    kept = tuple(dict.fromkeys(u.strip() for u in uris if isinstance(u, str) and u.strip()))
    return AgentFamily(name=name.strip(), version=_version(version), uris=kept)


def _local(tag: object) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: Element) -> str | None:
    return element.text


def xml_families(root: Element) -> tuple[AgentFamily, ...]:
    """The `GAFamily` elements of an ExtensionsConfig document, in document order."""
    holders = [root, *_children(root, "guestagentextension")]
    found: list[AgentFamily] = []
    for holder in holders:
        for group in _children(holder, "gafamilies"):
            for element in _children(group, "gafamily"):
                names = _children(element, "name")
                versions = _children(element, "version")
                uris: list[object] = [
                    _text(uri)
                    for uris_element in _children(element, "uris")
                    for uri in _children(uris_element, "uri")
                ]
                family = _family(
                    _text(names[0]) if names else None,
                    _text(versions[0]) if versions else None,
                    uris,
                )
                if family is not None:
                    found.append(family)
    return tuple(found)


def json_families(document: Mapping[Any, Any]) -> tuple[AgentFamily, ...]:
    """The `gaFamilies` of a vmSettings document (keys in any case)."""
    fields = {str(k).lower(): v for k, v in document.items()}
    entries = fields.get("gafamilies")
    if not isinstance(entries, list):
        return ()
    found: list[AgentFamily] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        values = {str(k).lower(): v for k, v in entry.items()}
        uris = values.get("uris")
        family = _family(
            values.get("name"), values.get("version"), uris if isinstance(uris, list) else []
        )
        if family is not None:
            found.append(family)
    return tuple(found)
