"""The built-in VM Access handler (`Microsoft.OSTCExtensions.VMAccessForLinux`)."""

from ._handler import VMAccess as VMAccess
from ._settings import VMAccessProtectedSettings as VMAccessProtectedSettings
from ._settings import VMAccessSettings as VMAccessSettings

__all__ = ["VMAccess", "VMAccessProtectedSettings", "VMAccessSettings"]
