"""The batched relaxer's own cost per step (optimiser + bookkeeping), apart from the potential.

Relaxes ``--n`` rattled and strained fcc Cu/Au/Al supercells of 16–36 atoms at a few GPa with
the torch Morse potential of the tests (``tests/relax_pair.py``: a cheap real potential, so
the relaxer's share is large and easy to see), all in one batch, one thread. Prints one JSON
line per repeat: steps, structures per step, CPU ms per step in total, inside the potential
and outside it (the relaxer's overhead), and the median over repeats. ``--profile FILE``
writes a cProfile dump of the last repeat.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/relax_overhead.py [--n 24] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # TorchMorse fixture
from alcsp.relax import RelaxConfig, relax_structures  # noqa: E402
from relax_pair import TorchMorse  # noqa: E402
from relax_throughput import TimedPotential as Timed  # noqa: E402  (same folder)

R0 = {29: 2.55, 13: 2.85, 79: 2.7}  # Å, Morse minimum distances


def structures(n: int, rng: np.random.Generator) -> list[Atoms]:
    out = []
    for _ in range(n):
        reps = [(1, 2, 2), (2, 2, 2), (3, 3, 1), (2, 2, 1)][int(rng.integers(4))]
        a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(reps)
        a.numbers = rng.choice([29, 13, 79], size=len(a), p=[0.6, 0.2, 0.2])
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True)
        a.rattle(0.05, rng=rng)
        out.append(a)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=24, help="structures")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--profile", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    cells = structures(args.n, np.random.default_rng(0))
    cfg = RelaxConfig(max_steps=args.max_steps, atoms_budget=10_000)
    overheads = []
    for rep in range(args.repeats):
        pot = Timed(TorchMorse(r0=R0))
        last = args.profile is not None and rep == args.repeats - 1
        prof = cProfile.Profile(time.process_time) if last else None
        c0 = time.process_time()
        if prof:
            prof.enable()
        res = relax_structures(cells, pot, 5.0, cfg)
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
        cpu = time.process_time() - c0
        over = 1e3 * (cpu - pot.cpu) / pot.calls
        overheads.append(over)
        print(json.dumps({
            "repeat": rep, "structures": args.n, "steps": pot.calls,
            "structures_per_step": round(pot.structures / pot.calls, 1),
            "converged": sum(r.converged for r in res),
            "ms_per_step": round(1e3 * cpu / pot.calls, 3),
            "potential_ms_per_step": round(1e3 * pot.cpu / pot.calls, 3),
            "overhead_ms_per_step": round(over, 3),
            "overhead_us_per_structure_step": round(1e3 * over * pot.calls / pot.structures, 1),
        }), flush=True)
    print(json.dumps({"median_overhead_ms_per_step": round(float(np.median(overheads)), 3)}))


if __name__ == "__main__":
    main()
