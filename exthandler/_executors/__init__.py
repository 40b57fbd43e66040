"""Executors: the ways a step's command is run (a package's process, an in-process handler)."""
