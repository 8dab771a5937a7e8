"""The one exception type for bad input: what the user fixes, not what the code got wrong.

``alcsp.cli`` prints a ``UserError`` as one line, ``alcsp CMD: error: MESSAGE``, and exits
with status 2; every other exception (a programming error) keeps its traceback. So a
message says what is wrong *and* how to fix it, in one line, naming the table and field
(``[campaign] seed``), the option (``--ehull``) or the file.

The error classes of the modules that check input derive from it (and from ``ValueError``
where callers catch that): ``alcsp.config.ConfigError``, ``alcsp.store.StoreError`` (and
its ``CampaignDirError`` and ``DamagedStore``), ``alcsp.analysis.AnalysisError``. The CLI
also prints ``ValueError``, ``OSError`` and SQLite's ``DatabaseError`` as one line (see
``alcsp.cli``), so checks elsewhere may raise those.
"""

from __future__ import annotations

#: The longest message the CLI prints (a message quoting a long value is cut).
MAX_MESSAGE = 1500


class UserError(Exception):
    """Bad input; the message is one line that names the problem and the fix."""


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one line (whitespace runs, newlines included, become one space), cut
    to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: Exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130

#: Exit status of a command stopped by SIGTERM (128 + SIGTERM): ``kill PID``, or a batch
#: scheduler ending a job (Slurm sends SIGTERM, then SIGKILL after its KillWait).
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``alcsp.cli``) and handled as Ctrl-C: the
    campaign and its workers close, the lock is freed, one line says how to continue."""
