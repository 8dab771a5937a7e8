"""Fused descriptor kernels alone: µs per atom of ``forward`` and ``backward``, one thread.

Times the C++ neighbour sums of ``alcsp.potential.fused`` (nothing of the PyTorch model) on
the cells of ``model_speed.py`` (batch 8, float32, paper hyperparameters), for each kernel
source given — e.g. the current ``_fused.cpp`` against an older one from git — interleaved
round by round so that machine noise hits every source alike. Prints one JSON line per
source with the median over all rounds.

    git show REV:src/alcsp/potential/_fused.cpp > /tmp/old_fused.cpp
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kernel_speed.py \\
        [--sources src/alcsp/potential/_fused.cpp,/tmp/old_fused.cpp] [--rounds 5] [--calls 40]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from alcsp.potential import ACNN, ACNNConfig, fused, graph_for
from alcsp.structures import StructureBatch
from model_speed import CASES, random_cell

_P = 35  # monomials of degree <= 4


def load(source: Path):
    """The kernel library built from ``source`` (fused builds and caches by content hash)."""
    # fused.library() reads the module's source path; point it at this file for one build
    default = fused._SOURCE
    fused._SOURCE = source
    fused.library.cache_clear()
    try:
        return fused.library()
    finally:
        fused._SOURCE = default
        fused.library.cache_clear()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--sources", default=str(fused._SOURCE), help="comma-separated kernel sources (.cpp)"
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=40, help="timed calls per source and round")
    args = p.parse_args()
    torch.set_num_threads(1)
    sources = [Path(s) for s in args.sources.split(",")]
    libs = {s: load(s) for s in sources}
    rng = np.random.default_rng(0)
    for name, case in CASES.items():
        cfg = ACNNConfig(
            species=case["species"],
            cutoff_radial=case["cutoffs"][0],
            cutoff_angular=case["cutoffs"][1],
        )
        model = ACNN(cfg).float()
        atoms = [random_cell(case["symbols"], case["vol"], rng) for _ in range(8)]
        g = graph_for(model, StructureBatch.from_atoms(atoms, dtype=torch.float32))
        vr, sr = g.radial.vector.contiguous(), g.radial.species.contiguous()
        va, sa = g.angular.vector.contiguous(), g.angular.species.contiguous()
        n, t = vr.shape[0], len(case["species"])
        kr, ka = cfg.basis_radial, cfg.basis_angular
        meta = fused._meta(vr, va, t, kr, ka, cfg.cutoff_radial, cfg.cutoff_angular)
        gen = torch.Generator().manual_seed(0)
        g_r = torch.randn(n, t, kr, generator=gen)  # [N, T, Kr] upstream gradients
        g_a = torch.randn(n, t, ka, _P, generator=gen)  # [N, T, Ka, P]
        times = {s: {"forward": [], "backward": []} for s in sources}
        for _ in range(args.rounds):
            for s in sources:
                for kind in ("forward", "backward"):
                    fn = getattr(libs[s], f"acnn_{kind}_f32")  # what fused._call runs
                    for _ in range(args.calls):
                        if kind == "forward":
                            out = [torch.zeros(n, t, kr), torch.zeros(n, t, ka, _P)]
                            tensors = [vr, sr, va, sa, *out]
                        else:
                            tensors = [
                                vr,
                                sr,
                                va,
                                sa,
                                g_r,
                                g_a,
                                torch.empty_like(vr),
                                torch.empty_like(va),
                            ]
                        ptrs = [x.data_ptr() for x in tensors]
                        c0 = time.perf_counter()
                        fn(*meta, *ptrs)
                        times[s][kind].append(time.perf_counter() - c0)
        for s in sources:
            print(
                json.dumps(
                    {
                        "case": name,
                        "source": str(s),
                        "atoms": n,
                        "forward_us_per_atom": round(
                            1e6 * float(np.median(times[s]["forward"])) / n, 2
                        ),
                        "backward_us_per_atom": round(
                            1e6 * float(np.median(times[s]["backward"])) / n, 2
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
