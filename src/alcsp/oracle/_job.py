"""Entry point of one isolated oracle attempt: ``python -m alcsp.oracle._job DIR``.

Reads ``DIR/job.pkl`` (written by ``ASEOracle``), runs the calculation and writes
``DIR/result.json``. Runs single-threaded unless the environment says otherwise.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m alcsp.oracle._job JOB_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    with open(directory / "job.pkl", "rb") as f:
        job = pickle.load(f)
    from alcsp.oracle.ase_oracle import run_attempt

    run_attempt(job["spec"], job["atoms"], job["params"], job["job"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
