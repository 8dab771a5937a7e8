"""Random-structure throughput over the paper's Mg-Ca-H search space at 300 GPa.

Space: Mg, Ca <= 3 in the formula, H/(Mg+Ca) <= 16, cells of at most 80 atoms. Each sample is
a random (composition, formula units) cell and one structure of it, so per-composition caches
barely help. The one-time cost of building PyXtal's 230 group tables is reported separately.
Prints JSON lines. Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generate_speed.py [--engine fast|pyxtal]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from alcsp.compositions import CompositionRules, enumerate_compositions
from alcsp.generate import GenerateConfig, StructureGenerator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", default="fast", choices=["fast", "pyxtal"])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rules = CompositionRules(
        ("Mg", "Ca", "H"),
        max_counts={"Mg": 3, "Ca": 3},
        ratio_caps=[("H", ("Mg", "Ca"), 16)],
        max_cell_atoms=80,
    )
    space = enumerate_compositions(rules)
    cells = [c for e in space for c in e.cell_compositions()]
    gen = StructureGenerator(GenerateConfig(pressure_gpa=300.0, engine=args.engine))
    t0 = time.perf_counter()
    for g in range(1, 231):
        gen.group(g)
    print(
        json.dumps(
            {"bench": "generate_setup", "group_tables_s": round(time.perf_counter() - t0, 2)}
        )
    )
    rates = []
    for r in range(args.repeats):
        rng = np.random.default_rng(r)
        pick = rng.integers(0, len(cells), size=args.samples)
        made = failed = atoms = 0
        t0 = time.perf_counter()
        for i in pick:
            res = gen.generate(cells[i], 1, rng)
            made += len(res.structures)
            failed += len(res.failures)
            atoms += sum(len(s) for s in res.structures)
        dt = time.perf_counter() - t0
        rates.append(made / dt)
        print(
            json.dumps(
                {
                    "bench": "generate_speed",
                    "engine": args.engine,
                    "repeat": r,
                    "cells": len(pick),
                    "made": made,
                    "failed": failed,
                    "mean_atoms": round(atoms / max(made, 1), 1),
                    "seconds": round(dt, 2),
                    "structures_per_s": round(made / dt, 2),
                }
            )
        )
    print(
        json.dumps(
            {
                "bench": "generate_speed",
                "engine": args.engine,
                "space_cells": len(cells),
                "median_structures_per_s": round(float(np.median(rates)), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
