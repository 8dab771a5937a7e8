"""Is a float32 search safe? The same random starts relaxed with the same ACNN in float64 and
float32 (the search's shard function, alcsp.search.relax_shard), compared minimum by minimum.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/float32_search.py runs/demo --iteration 2 \
        --repeats 3

Takes a finished campaign directory: its model of ``--iteration`` and that iteration's
random starts (the ones the search relaxed). Prints, over the structures that converged in
both precisions, the share whose enthalpy per atom agrees within 1 meV/atom, the median and
worst differences, how many changed status, and the CPU and wall time of each precision
(medians of interleaved repeats, one thread).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from alcsp.config import parse_config
from alcsp.search import ShardJob, relax_shard
from alcsp.store import CampaignStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--max-structures", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1e-3, help="eV/atom")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with CampaignStore.open(args.directory, readonly=True) as store:
        cfg = parse_config(store.config_text)
        rec = [r for r in store.models() if r.iteration == args.iteration]
        if not rec:
            raise SystemExit(f"{args.directory} has no model of iteration {args.iteration}")
        model = str(store.model_path(rec[-1]).resolve())
        ids = store.structure_ids(origin="random", iteration=args.iteration)
        starts = tuple(store.get_atoms(ids[: args.max_structures]))
    jobs = {
        d: ShardJob(model, starts, cfg.campaign.pressure, cfg.relax, cfg.dedup.fingerprint, d)
        for d in ("float64", "float32")
    }
    cpu: dict[str, list[float]] = {d: [] for d in jobs}
    wall: dict[str, list[float]] = {d: [] for d in jobs}
    out = {}
    for _ in range(args.repeats):
        for d, job in jobs.items():  # interleaved
            t0, c0 = time.perf_counter(), time.process_time()
            out[d] = relax_shard(job)
            wall[d].append(time.perf_counter() - t0)
            cpu[d].append(time.process_time() - c0)
    r64, r32 = out["float64"].results, out["float32"].results
    both = [
        k
        for k in range(len(starts))
        if r64[k].status == "converged" and r32[k].status == "converged"
    ]
    dh = np.array([abs(r64[k].enthalpy - r32[k].enthalpy) for k in both])  # eV/atom
    changed = sum(r64[k].status != r32[k].status for k in range(len(starts)))
    n_atoms = sum(len(a) for a in starts)
    print(
        f"{len(starts)} structures ({n_atoms} atoms) of {args.directory} iteration "
        f"{args.iteration}, {cfg.campaign.pressure} GPa, model {Path(model).name}"
    )
    print(f"converged in both: {len(both)}; status changed: {changed}")
    if len(both):
        share = float((dh <= args.tolerance).mean())
        print(
            f"|H32 - H64| <= {args.tolerance * 1000:.1f} meV/atom: {100 * share:.1f} %; "
            f"median {1000 * float(np.median(dh)):.4f}, max {1000 * float(dh.max()):.3f} "
            "meV/atom"
        )
    for d in jobs:
        c, w = statistics.median(cpu[d]), statistics.median(wall[d])
        print(
            f"{d}: CPU {c:.2f} s, wall {w:.2f} s (median of {args.repeats}), "
            f"steps {sum(r.steps for r in out[d].results)}"
        )
    print(
        f"float32 / float64 CPU time: "
        f"{statistics.median(cpu['float32']) / statistics.median(cpu['float64']):.2f}"
    )


if __name__ == "__main__":
    main()
