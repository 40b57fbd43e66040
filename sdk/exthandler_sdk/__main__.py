"""`python -m exthandler_sdk run|package|schema ...`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: python -m exthandler_sdk COMMAND ...

commands:
  run MODULE:CLASS OPERATION        run one operation, as an agent's command would
  package MODULE:CLASS --out DIR    write DIR/Publisher.Type__Version.zip
      [--sign-key KEY --sign-cert CERT [--chain CHAIN]]   and sign it (.zip.sig)
  schema MODULE:CLASS               print the JSON Schema of the settings types
  worker MODULE:CLASS METHOD        start a background worker (what ctx.start_worker runs)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        from ._runner import main_run

        return main_run(rest)
    if command == "package":
        from ._package import main_package

        return main_package(rest)
    if command == "worker":
        from ._workers import main_worker

        return main_worker(rest)
    if command == "schema":
        from ._schema import main_schema

        return main_schema(rest)
    print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
