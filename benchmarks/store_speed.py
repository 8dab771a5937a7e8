"""Write speed of the campaign store: relaxed structures (geometry + relaxation record) in
batched transactions, then the queries the loop makes. Prints JSON lines.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/store_speed.py --rows 1000000 --batch 10000

Each row is one relaxed structure: a structures row (3 NumPy blobs) and a relaxations row,
as ``CampaignStore.add_relaxed`` writes them. Structures are 8-40-atom Mg-Ca-H cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from alcsp.store import CampaignStore, RelaxationRecord


def make_batch(rng: np.random.Generator, n: int) -> tuple[list[Atoms], list[RelaxationRecord]]:
    atoms, recs = [], []
    for _ in range(n):
        m = int(rng.integers(8, 41))
        numbers = rng.choice([12, 20, 1], size=m, p=[0.1, 0.1, 0.8])
        cell = np.eye(3) * (2.25 * m) ** (1 / 3)
        a = Atoms(numbers=numbers, positions=rng.random((m, 3)) @ cell, cell=cell, pbc=True)
        atoms.append(a)
        recs.append(
            RelaxationRecord(
                status="converged" if rng.random() < 0.9 else "max_steps",
                energy=float(-3 * m + rng.normal()),
                enthalpy_per_atom=float(rng.normal()),
                volume=2.25 * m,
                steps=int(rng.integers(10, 300)),
                pressure=300.0,
            )
        )
    return atoms, recs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--dir", type=Path, default=None, help="campaign dir (default: a temp dir)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    root = args.dir or Path(tempfile.mkdtemp(prefix="store_speed_"))
    store = CampaignStore.create(root / "camp")
    # Build a pool of batches up front so that the timing is the store's, not the
    # generator's; reuse them cyclically (the store copies the arrays into blobs).
    pool = [make_batch(rng, args.batch) for _ in range(4)]
    rates = []
    cpu0 = time.process_time()
    t_all = time.perf_counter()
    written = 0
    it = 0
    while written < args.rows:
        atoms, recs = pool[it % len(pool)]
        n = min(args.batch, args.rows - written)
        t0 = time.perf_counter()
        store.add_relaxed(atoms[:n], recs[:n], iteration=it)
        dt = time.perf_counter() - t0
        rates.append(n / dt)
        written += n
        it += 1
    total = time.perf_counter() - t_all
    cpu = time.process_time() - cpu0
    size_mb = sum(f.stat().st_size for f in (root / "camp").glob("campaign.sqlite*")) / 1e6
    print(
        json.dumps(
            {
                "bench": "store_write",
                "rows": written,
                "batch": args.batch,
                "rows_per_s_overall": round(written / total),
                "rows_per_s_median_batch": round(statistics.median(rates)),
                "rows_per_s_min_batch": round(min(rates)),
                "rows_per_cpu_s": round(written / cpu),
                "seconds": round(total, 2),
                "cpu_seconds": round(cpu, 2),
                "db_mb": round(size_mb, 1),
            }
        )
    )
    # The loop's queries: lowest enthalpies of one composition, E_hull window, counts.
    comp = store.conn.execute("SELECT composition FROM relaxations LIMIT 1").fetchone()[0]
    t0 = time.perf_counter()
    rows = store.conn.execute(
        "SELECT id FROM relaxations WHERE composition = ? ORDER BY enthalpy_per_atom LIMIT 3",
        (comp,),
    ).fetchall()
    t_comp = time.perf_counter() - t0
    ids = store.relaxations(iteration=0).id
    t0 = time.perf_counter()
    store.set_e_hull(ids, np.abs(rng.normal(size=len(ids))) * 0.1)
    t_hull = time.perf_counter() - t0
    t0 = time.perf_counter()
    near = store.conn.execute("SELECT COUNT(*) FROM relaxations WHERE e_hull < 0.01").fetchone()
    t_near = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = store.get_atoms([int(i) for i in store.relaxations(iteration=1).structure_id[:1000]])
    t_get = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "bench": "store_query",
                "lowest3_in_composition_ms": round(1e3 * t_comp, 2),
                "found": len(rows),
                "set_e_hull_rows_per_s": round(len(ids) / t_hull),
                "e_hull_window_ms": round(1e3 * t_near, 2),
                "near_hull": near[0],
                "get_atoms_1000_ms": round(1e3 * t_get, 1),
                "n_atoms_read": len(got),
            }
        )
    )
    store.close()


if __name__ == "__main__":
    main()
