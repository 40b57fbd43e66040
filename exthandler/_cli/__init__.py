"""The command line: argument parsing, printing, goal-file editing and progress."""

from __future__ import annotations

import sys

__all__ = ["run"]


def run(argv: list[str] | None = None) -> int:
    """The `exthandler` command and `python -m exthandler`: `main.main(argv)`, except that
    a lone `--version` is answered before the parser or any of the runtime is imported
    (scripts and agents ask it often, and it must not pay for the runtime's start-up).
    Called as the process's command (`argv` None), it freezes the collector before it
    returns (see `_before_exit`)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from .. import __version__

        sys.stdout.write(f"exthandler {__version__}\n")
        return 0
    from .main import main

    code = main(argv)
    if argv is None:  # the process ends now: see below
        _before_exit()
    return code


def _before_exit() -> None:
    """Hand every object left to the collector's permanent generation. At exit the
    interpreter collects once more over everything alive, and with the runtime's modules
    and a pass's records that walk costs more than a small pass itself; the memory goes
    back with the process anyway."""
    import gc

    gc.freeze()
