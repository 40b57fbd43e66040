"""The artifact manifest (PROTOCOL.md section 11): which versions of a handler exist, and
where each version's package can be downloaded.

```xml
<PluginVersionManifest>
  <Plugins>
    <Plugin><Version>1.0.0</Version><Uris><Uri>https://.../Pub.Type__1.0.0</Uri></Uris></Plugin>
  </Plugins>
  <InternalPlugins>(same shape)</InternalPlugins>
</PluginVersionManifest>
```

Element names match case-insensitively; unknown elements are ignored. A `Plugin` without a
usable version or any `Uri` is skipped; a document that yields no plugin at all is refused
with every reason, each `path: reason`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._errors import VersionError
from .._model import Version

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

__all__ = ["ManifestError", "ManifestPlugin", "parse_version_manifest"]


class ManifestError(ValueError):
    """A PluginVersionManifest that cannot be used; `problems` are `path: reason` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problems))


@attrs.frozen
class ManifestPlugin:
    """One version the manifest offers and the URIs of its package, in the order to try."""

    version: Version
    uris: tuple[str, ...]
    disallow_major_upgrade: bool = False
    internal: bool = False


def _local(tag: object) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse_version_manifest(data: bytes) -> tuple[ManifestPlugin, ...]:
    """The plugins a PluginVersionManifest lists, in document order. Raises ManifestError.

    Parsed with defusedxml: no DTD, no entity expansion, no external references.
    """
    import defusedxml
    import defusedxml.ElementTree

    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise ManifestError([f"PluginVersionManifest: refused XML ({exc})"]) from None
    except (defusedxml.ElementTree.ParseError, ValueError, LookupError) as exc:
        raise ManifestError([f"PluginVersionManifest: not valid XML ({exc})"]) from None
    if _local(root.tag) != "pluginversionmanifest":
        raise ManifestError([f"{_local(root.tag) or '?'}: not a PluginVersionManifest"])
    plugins: list[ManifestPlugin] = []
    problems: list[str] = []
    for group, internal in (("plugins", False), ("internalplugins", True)):
        label = "InternalPlugins" if internal else "Plugins"
        for section in _children(root, group):
            for index, plugin in enumerate(_children(section, "plugin"), start=1):
                path = f"PluginVersionManifest/{label}/Plugin[{index}]"
                versions = _children(plugin, "version")
                try:
                    version = Version.parse(_text(versions[0]) if versions else "")
                except (VersionError, ValueError) as exc:
                    problems.append(f"{path}/Version: {exc}")
                    continue
                uris = tuple(
                    dict.fromkeys(
                        text
                        for uris_element in _children(plugin, "uris")
                        for uri in _children(uris_element, "uri")
                        if (text := _text(uri))
                    )
                )
                if not uris:
                    problems.append(f"{path}/Uris: no Uri")
                    continue
                flag = _children(plugin, "disallowmajorversionupgrade")
                plugins.append(
                    ManifestPlugin(
                        version=version,
                        uris=uris,
                        disallow_major_upgrade=bool(flag) and _text(flag[0]).lower() == "true",
                        internal=internal,
                    )
                )
    if not plugins:
        raise ManifestError(problems or ["PluginVersionManifest/Plugins: no Plugin"])
    return tuple(plugins)
