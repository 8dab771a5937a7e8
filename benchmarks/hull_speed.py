"""E_hull of 1,000,000 entries over ~800 compositions of a ternary (Mg-Ca-H).

Prints one JSON line per repeat and a summary line with the median.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hull_speed.py
"""

from __future__ import annotations

import json
import time

import numpy as np

from alcsp.compositions import CompositionRules, enumerate_compositions
from alcsp.hull import build_hull


def main(n_entries: int = 1_000_000, repeats: int = 3) -> None:
    rules = CompositionRules(
        ("Mg", "Ca", "H"),
        max_counts={"Mg": 4, "Ca": 4},
        ratio_caps=[("H", ("Mg", "Ca"), 12)],
        max_cell_atoms=80,
    )
    space = enumerate_compositions(rules)
    keys = space.keys[:800]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(keys), size=n_entries)
    comps = [keys[i] for i in idx]  # one formula string per entry, as the campaign passes them
    h = rng.normal(-0.1, 0.2, size=n_entries)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        res = build_hull(comps, h)
        dt = time.perf_counter() - t0
        times.append(dt)
        print(
            json.dumps(
                {
                    "bench": "hull_speed",
                    "repeat": r,
                    "entries": n_entries,
                    "compositions": len(res.keys),
                    "stable": len(res.stable_indices),
                    "seconds": round(dt, 3),
                }
            )
        )
    print(
        json.dumps(
            {
                "bench": "hull_speed",
                "median_seconds": round(float(np.median(times)), 3),
                "entries": n_entries,
                "compositions": len(keys),
            }
        )
    )


if __name__ == "__main__":
    main()
