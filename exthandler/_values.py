"""`Value`: the frozen, keyword-only value classes of the runtime's models and views.

They are the SDK's (`exthandler_sdk._values`): one implementation for both packages, and
importing it costs neither a third-party import nor more than one small module.
"""

from __future__ import annotations

from exthandler_sdk._values import FrozenError, Value, field, is_value_class

__all__ = ["FrozenError", "Value", "field", "is_value_class"]
