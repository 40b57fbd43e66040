"""The pluggy marker plugins use to register with exthandler (project name `exthandler`)."""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl"]

PROJECT = "exthandler"
hookimpl = pluggy.HookimplMarker(PROJECT)
