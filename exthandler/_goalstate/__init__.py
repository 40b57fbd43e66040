"""Goal-state parsers: native JSON, ARM templates, ExtensionsConfig XML and vmSettings JSON.

Every format is read into the same model (`exthandler._model.GoalState`); the format is
told from the content, never from a file name.
"""

from ._detect import load_goal_state as load_goal_state
from ._detect import parse_goal_state as parse_goal_state

__all__ = ["load_goal_state", "parse_goal_state"]
