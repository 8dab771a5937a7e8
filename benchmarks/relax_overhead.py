"""The batched relaxer's own cost per step (optimiser + bookkeeping), apart from the potential.

Relaxes ``--n`` rattled and strained fcc Cu/Au/Al supercells of 16–36 atoms at a few GPa with
the torch Morse potential of the tests (``tests/relax_pair.py``: a cheap real potential, so
the relaxer's share is large and easy to see), all in one batch, one thread. Prints one JSON
line per repeat: steps, structures per step, CPU ms per step in total, inside the potential
and outside it (the relaxer's overhead), and the median over repeats. ``--profile FILE``
writes a cProfile dump of the last repeat. ``--frame-intervals 0,5`` runs every repeat once
per ``RelaxConfig.frame_interval`` value, interleaved (0, 5, 0, 5, ...), and prints the
median wall and CPU time of each and their ratios to the first value.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/relax_overhead.py [--n 24] [--repeats 5]
        [--frame-intervals 0,5]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from dataclasses import replace
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


def run_once(cells: list[Atoms], cfg: RelaxConfig, profile: Path | None) -> dict:
    """One relaxation of ``cells``: timings (CPU of this process, wall) and counts."""
    pot = Timed(TorchMorse(r0=R0))
    prof = cProfile.Profile(time.process_time) if profile is not None else None
    c0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    res = relax_structures(cells, pot, 5.0, cfg)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    over = 1e3 * (cpu - pot.cpu) / pot.calls
    return {
        "frame_interval": cfg.frame_interval,
        "structures": len(cells),
        "steps": pot.calls,
        "frames": sum(len(r.frames) for r in res),
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "structures_per_step": round(pot.structures / pot.calls, 1),
        "converged": sum(r.converged for r in res),
        "ms_per_step": round(1e3 * cpu / pot.calls, 3),
        "potential_ms_per_step": round(1e3 * pot.cpu / pot.calls, 3),
        "overhead_ms_per_step": round(over, 3),
        "overhead_us_per_structure_step": round(1e3 * over * pot.calls / pot.structures, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=24, help="structures")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--profile", type=Path)
    p.add_argument(
        "--frame-intervals",
        default="0",
        help="comma-separated RelaxConfig.frame_interval values, run interleaved",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    cells = structures(args.n, np.random.default_rng(0))
    cfg = RelaxConfig(max_steps=args.max_steps, atoms_budget=10_000)
    intervals = [int(k) for k in args.frame_intervals.split(",")]
    runs: dict[int, list[dict]] = {k: [] for k in intervals}
    for rep in range(args.repeats):
        for k in intervals:  # interleaved: one run of each value per repeat
            last = rep == args.repeats - 1 and k == intervals[-1]
            row = run_once(cells, replace(cfg, frame_interval=k), args.profile if last else None)
            runs[k].append(row)
            print(json.dumps({"repeat": rep, **row}), flush=True)

    def median(k: int, key: str) -> float:
        return float(np.median([r[key] for r in runs[k]]))

    ref = intervals[0]
    for k in intervals:
        print(
            json.dumps(
                {
                    "frame_interval": k,
                    "median_overhead_ms_per_step": round(median(k, "overhead_ms_per_step"), 3),
                    "median_wall_s": round(median(k, "wall_s"), 4),
                    "median_cpu_s": round(median(k, "cpu_s"), 4),
                    "wall_ratio": round(median(k, "wall_s") / median(ref, "wall_s"), 4),
                    "cpu_ratio": round(median(k, "cpu_s") / median(ref, "cpu_s"), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
