"""The ``alcsp`` command line: a thin dispatcher over one module per command.

Each command lives in ``alcsp.commands.<name>`` and defines ``add_parser(subparsers)``
(which registers its arguments and sets ``func``). Add a new command by adding its module
name to ``COMMANDS``.

Every failure of the user's making is one line on stderr, ``alcsp CMD: error: MESSAGE``,
and exit status 2: a ``UserError`` (``alcsp.errors``), a ``ValueError`` or an ``OSError``
(a missing file, no permission, a full disk) raised by a command, SQLite's
``DatabaseError`` (a damaged campaign database), and argparse's own errors (an unknown
command or option, a missing argument). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from alcsp import __version__
from alcsp.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, UserError, one_line

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


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alcsp",
        description="Active-learning crystal structure prediction with the ACNN potential.",
    )
    parser.add_argument("--version", action="version", version=f"alcsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"alcsp.commands.{name}").add_parser(sub)
    return parser


#: What the CLI prints as one line: bad input, files, the campaign database.
USER_ERRORS = (UserError, ValueError, OSError, sqlite3.DatabaseError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser, as its other errors are
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    handling, previous = _terminate_as_interrupt()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe can no longer be caught
        return code
    except BrokenPipeError:
        if not _stdout_closed():  # a broken pipe or socket of the command's own
            raise
        _discard_stdout()  # the reader of stdout left (| head): stop quietly
        return EXIT_BROKEN_PIPE
    except USER_ERRORS as exc:  # user errors: one clear line, no traceback
        print(f"alcsp {args.command}: error: {describe(exc, args)}", file=sys.stderr)
        return 2
    except Terminated:  # SIGTERM: as Ctrl-C
        print(f"alcsp {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (alcsp run says how to resume)
        print(f"alcsp {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if handling:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated()


def _terminate_as_interrupt() -> tuple[bool, Any]:
    """Make SIGTERM raise ``Terminated`` (a ``KeyboardInterrupt``) in the main thread, so
    that ``kill PID`` or a scheduler's end of job closes workers, jobs, store and lock as
    Ctrl-C does (the default action would leave that to the workers' death watch and
    multiprocessing's resource tracker, which then warns of leaked semaphores). Returns
    whether it did (not off the main thread, where Python cannot set a handler) and the
    handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return False, None
    return True, signal.signal(signal.SIGTERM, _raise_terminated)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def describe(exc: BaseException, args: argparse.Namespace) -> str:
    """The one line that tells the user what went wrong and what to do."""
    if isinstance(exc, sqlite3.DatabaseError):
        from alcsp.store.db import database_error

        directory = getattr(args, "directory", None) or getattr(args, "target", None)
        where = Path(directory) if isinstance(directory, Path) and directory.is_dir() else None
        return one_line(database_error(exc, where))
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.strerror:
        return one_line(_os_error(exc))
    return one_line(exc)


def _os_error(exc: OSError) -> str:
    """An ``OSError`` (which names no fix) with the fix for its kind."""
    what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (
            f"{what}; free some disk space (or raise the quota or the file size limit) and "
            "run the command again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}; the command needs permission to read or write there"
    if exc.errno == errno.ENOENT:
        return f"{what}; check the path"
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return f"{what}; give a file where a file is expected and a folder where a folder is"
    return what


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
