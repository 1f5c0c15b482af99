"""Command line: `attention-explorer <command> --help` (or `python -m explorer <command> --help`).

Each command prints a report for people, or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import sys

from explorer.cli import app, attention, cross, generate, kv, variants


def main(argv: list[str] | None = None) -> int:
    prog = "python -m explorer" if sys.argv[0].endswith("__main__.py") else "attention-explorer"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (attention, kv, variants, cross, generate, app):
        command.add(commands)

    args, unknown = parser.parse_known_args(argv)
    if args.command == "app":
        args.streamlit_options = unknown  # every option `streamlit run` takes
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
