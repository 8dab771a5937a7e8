"""Entry point of one isolated oracle attempt: ``python -m alcsp.oracle._job DIR``.

Reads ``DIR/job.pkl`` (written by ``ASEOracle``), runs the calculation and writes
``DIR/result.json``. Runs single-threaded unless the environment says otherwise.

``ASEOracle`` starts this process as the leader of its own process group (a new session)
with ``ALCSP_JOB_PARENT`` = its own PID. The process then splits in two:

* a supervisor (this process) that only waits: it dies with its parent, and takes the
  whole group with it: on Linux its parent-death signal (SIGTERM) makes it SIGKILL its
  process group, i.e. the calculation and every process the code started (``mpirun``,
  ``pw.x``), however busy they are. A waiting Python process runs its signal handler at
  once, which a calculation holding the GIL in C code would not.
* a forked child that runs the calculation; it exits with the same status the
  supervisor then reports (a death by signal N reads as signal N to the parent).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from pathlib import Path

#: Set by ``ASEOracle`` to its PID: the process whose death ends the job.
PARENT_ENV = "ALCSP_JOB_PARENT"


def _kill_own_group(*_: object) -> None:
    """SIGKILL the job's process group (this process included), or only this process
    when it does not lead a group of its own (started by hand from a shell)."""
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _die_with_parent() -> None:
    """Kill the group when the process that started this job dies (Linux)."""
    from alcsp.execute import set_parent_death_signal

    expected = os.environ.get(PARENT_ENV, "")
    if not expected:
        return
    signal.signal(signal.SIGTERM, _kill_own_group)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != int(expected):  # the parent died before the signal was set
        _kill_own_group()


def _calculate(directory: Path) -> None:
    with open(directory / "job.pkl", "rb") as f:
        job = pickle.load(f)
    from alcsp.oracle.ase_oracle import run_attempt

    run_attempt(job["spec"], job["atoms"], job["params"], job["job"])


def _run_child(directory: Path) -> int:
    """In the forked child: the calculation; never returns."""
    from alcsp.execute import set_parent_death_signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_parent_death_signal(signal.SIGKILL)  # the supervisor is single-threaded: safe
    code = 0
    try:
        _calculate(directory)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m alcsp.oracle._job JOB_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    if not os.environ.get(PARENT_ENV) or not hasattr(os, "fork"):
        _calculate(directory)  # started by hand: no one to die with
        return 0
    _die_with_parent()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_child(directory)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # report the child's death as our own
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:  # SIGKILL's action is fixed (and default)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
