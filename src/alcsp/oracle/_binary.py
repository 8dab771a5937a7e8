"""Find the executable at the head of a command line (``mpirun -np 4 pw.x`` → pw.x)."""

from __future__ import annotations

import os
import shlex
import shutil

#: Launchers skipped when looking for the code's own executable.
LAUNCHERS = frozenset({"mpirun", "mpiexec", "srun", "aprun", "ibrun", "env", "time"})


def missing_executables(command: str) -> list[str]:
    """Executables named in ``command`` that are not on PATH (launcher and code)."""
    words = shlex.split(command)
    missing = []
    code_found = False
    for i, w in enumerate(words):
        if w.startswith("-") or "=" in w or (i > 0 and words[i - 1] in ("-np", "-n", "-c")):
            continue
        path_ok = shutil.which(w) is not None or (os.sep in w and os.access(w, os.X_OK))
        if not path_ok:
            missing.append(w)
        if os.path.basename(w) not in LAUNCHERS:
            code_found = True
            break
    if not code_found and not missing:
        missing.append("<no code executable in command>")
    return missing
