"""The built-in Application Health handler
(`Microsoft.ManagedServices.ApplicationHealthLinux`)."""

from ._handler import ApplicationHealth as ApplicationHealth
from ._probe import HealthState as HealthState
from ._settings import ApplicationHealthSettings as ApplicationHealthSettings

__all__ = ["ApplicationHealth", "ApplicationHealthSettings", "HealthState"]
