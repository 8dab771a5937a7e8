"""The one exception type for bad input: what the user fixes, not what the code got wrong.

``alcsp.cli`` prints a ``UserError`` as one line, ``alcsp CMD: error: MESSAGE``, and exits
with status 2; every other exception (a programming error) keeps its traceback. So a
message says what is wrong *and* how to fix it, in one line, naming the table and field
(``[campaign] seed``), the option (``--ehull``) or the file.

The error classes of the modules that check input derive from it (and from ``ValueError``
where callers catch that): ``alcsp.config.ConfigError``, ``alcsp.references.ReferenceError``,
``alcsp.potential.io.ModelFileError`` and ``DataFileError``,
``alcsp.relax.config.RelaxConfigError``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message is one line that names the problem and the fix."""
