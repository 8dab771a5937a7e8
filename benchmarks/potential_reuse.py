"""ACNNPotential.compute with and without neighbour-list reuse, on a slowly moving batch.

The batch of ``model_speed.py`` (8 random 40-atom Mg–Ca–H cells at 2.25 Å³/atom, 8 random
30-atom Be–P–N–O cells at 9 Å³/atom, paper hyperparameters, float32) moves every call by a
random displacement of ``--move`` Å rms per atom plus a 0.2% random strain (a relaxation
step's size); the potential is called ``--calls`` times with ids (reuse, skin 0.5 Å) and
without (a fresh vesin list every call), alternating, one thread. Prints CPU µs/atom per
call (medians) and how many lists were reused.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/potential_reuse.py [--calls 40]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from alcsp.potential import ACNN, ACNNConfig, ACNNPotential
from alcsp.structures import StructureBatch
from model_speed import CASES, random_cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--move", type=float, default=0.02, help="Å rms per atom and call")
    ap.add_argument("--skin", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for name, case in CASES.items():
        cfg = ACNNConfig(
            species=case["species"],
            cutoff_radial=case["cutoffs"][0],
            cutoff_angular=case["cutoffs"][1],
        )
        model = ACNN(cfg).float()
        fresh = ACNNPotential(model, skin=0.0)
        reuse = ACNNPotential(model, skin=args.skin)
        atoms = [random_cell(case["symbols"], case["vol"], rng) for _ in range(args.batch)]
        ids = torch.arange(args.batch)
        t_fresh, t_reuse = [], []
        for _ in range(args.calls):
            for a in atoms:
                strain = np.eye(3) + rng.normal(0, 0.002, (3, 3))
                a.set_cell(a.cell.array @ strain, scale_atoms=True)
                a.positions += rng.normal(0, args.move / np.sqrt(3), a.positions.shape)
            batch = StructureBatch.from_atoms(atoms, dtype=torch.float32)
            n = batch.positions.shape[0]
            c0 = time.process_time()
            fresh.compute(batch)
            c1 = time.process_time()
            batch.ids = ids
            reuse.compute(batch)
            c2 = time.process_time()
            t_fresh.append((c1 - c0) / n)
            t_reuse.append((c2 - c1) / n)
        print(
            json.dumps(
                {
                    "case": name,
                    "batch": args.batch,
                    "atoms": n,
                    "calls": args.calls,
                    "move_rms_a": args.move,
                    "skin_a": args.skin,
                    "fresh_us_per_atom": round(1e6 * float(np.median(t_fresh)), 1),
                    "reuse_us_per_atom": round(1e6 * float(np.median(t_reuse)), 1),
                    "lists_built": reuse.pair_lists_built,
                    "lists_reused": reuse.pair_lists_reused,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
