"""The engine: converging goal states into a state dir (see engine.py for the parts)."""

from .engine import DEFAULT_TIMEOUTS, Engine, EngineOptions, Plan

__all__ = ["DEFAULT_TIMEOUTS", "Engine", "EngineOptions", "Plan"]
