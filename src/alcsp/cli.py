"""The ``alcsp`` command line: a thin dispatcher over one module per command.

Each command lives in ``alcsp.commands.<name>`` and defines ``add_parser(subparsers)``
(which registers its arguments and sets ``func``). Add a new command by adding its module
name to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from alcsp import __version__

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
    "collect",
    "label",
    "analyse",
)

#: Exit status after a closed stdout (``alcsp ... | head``): 128 + SIGPIPE, what the shell
#: reports for any producer whose reader left early (``seq 1000000 | head -1``), so that
#: ``set -o pipefail`` scripts see the output was cut, as with every other tool.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alcsp",
        description="Active-learning crystal structure prediction with the ACNN potential.",
    )
    parser.add_argument("--version", action="version", version=f"alcsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"alcsp.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe can no longer be caught
        return code
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"alcsp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_closed():  # a broken pipe or socket of the command's own
            raise
        _discard_stdout()  # the reader of stdout left (| head): stop quietly
        return EXIT_BROKEN_PIPE


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports POLLERR)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR is always reported
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor, no poll
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is still
    buffered does not raise (and print) a second BrokenPipeError at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured stdout)
        pass


if __name__ == "__main__":
    sys.exit(main())
