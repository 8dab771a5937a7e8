"""The ``alcsp`` command line: a thin dispatcher over one module per command.

Each command lives in ``alcsp.commands.<name>`` and defines ``add_parser(subparsers)``
(which registers its arguments and sets ``func``). Add a new command by adding its module
name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: tuple[str, ...] = (
    "train",
    "relax",
    "compositions",
    "generate",
    "hull",
    "run",
    "status",
    "report",
    "export",
    "converge",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alcsp",
        description="Active-learning crystal structure prediction with the ACNN potential.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"alcsp.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"alcsp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
