"""Cluster 100,000 fingerprints (Deduplicator, one core) and time the fingerprint itself.

Synthetic but shaped like a campaign: 800 compositions, 30 distinct polymorphs each (random
unit fingerprints of a ternary's length, 6 pairs x 60 grid points), every structure a noisy
copy of one polymorph with a noisy enthalpy, so most inputs are duplicates.
Prints JSON lines. Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dedup_speed.py
"""

from __future__ import annotations

import json
import time

import numpy as np
from ase.build import bulk

from alcsp.dedup import DedupConfig, FingerprintConfig, deduplicate, fingerprint


def cluster_bench(n: int = 100_000, n_comp: int = 800, n_poly: int = 30, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    dim = 6 * len(FingerprintConfig().grid)
    base = rng.random((n_comp, n_poly, dim)).astype(np.float32) ** 8  # peaky, like RDFs
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    base_h = rng.normal(-0.1, 0.15, size=(n_comp, n_poly))
    c = rng.integers(0, n_comp, size=n)
    p = rng.integers(0, n_poly, size=n)
    fps = base[c, p] + rng.normal(0, 0.002, size=(n, dim)).astype(np.float32)
    fps /= np.linalg.norm(fps, axis=1, keepdims=True)
    h = base_h[c, p] + rng.normal(0, 0.001, size=n)
    keys = [f"C{k}" for k in c]
    ids = [str(i) for i in range(n)]
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = deduplicate(ids, keys, h, fps, DedupConfig())
        dt = time.perf_counter() - t0
        times.append(dt)
        n_rep = sum(o is None for o in out)
        print(
            json.dumps(
                {
                    "bench": "dedup_cluster",
                    "repeat": r,
                    "structures": n,
                    "representatives": n_rep,
                    "true_polymorphs": len(set(zip(c.tolist(), p.tolist(), strict=True))),
                    "seconds": round(dt, 2),
                }
            )
        )
    print(
        json.dumps(
            {
                "bench": "dedup_cluster",
                "median_seconds": round(float(np.median(times)), 2),
                "structures": n,
            }
        )
    )


def fingerprint_bench(repeats: int = 200) -> None:
    rng = np.random.default_rng(1)
    # a 40-atom cell at 2.25 A^3/atom, like Mg-Ca-H at 300 GPa
    atoms = bulk("Mg", "fcc", a=(4 * 2.25) ** (1 / 3)).repeat((2, 2, 10))
    atoms.numbers[:10] = 20
    atoms.numbers[10:] = 1
    atoms.rattle(0.05, rng=rng)
    atoms = atoms[:40]
    fingerprint(atoms)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fingerprint(atoms)
    dt = (time.perf_counter() - t0) / repeats
    print(
        json.dumps(
            {"bench": "fingerprint", "atoms": len(atoms), "ms_per_structure": round(dt * 1e3, 3)}
        )
    )


if __name__ == "__main__":
    cluster_bench()
    fingerprint_bench()
