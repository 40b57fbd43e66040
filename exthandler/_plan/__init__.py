"""Plan: the pure planner, the version policy, target resolution and the goal-state checks."""
