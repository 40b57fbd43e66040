"""The built-in CustomScript handler (`Microsoft.Azure.Extensions.CustomScript`)."""

from .._shared.download import DownloadPolicy as DownloadPolicy
from ._handler import CustomScript as CustomScript
from ._settings import CustomScriptProtectedSettings as CustomScriptProtectedSettings
from ._settings import CustomScriptSettings as CustomScriptSettings

__all__ = [
    "CustomScript",
    "CustomScriptProtectedSettings",
    "CustomScriptSettings",
    "DownloadPolicy",
]
