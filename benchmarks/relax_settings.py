"""Outcomes of the batched relaxer under different ``RelaxConfig`` settings, same structures.

Relaxes the random structures of ``relax_throughput.py`` (same generator and seed) with a
saved ACNN model once per settings string (JSON of ``RelaxConfig`` fields) and prints one
JSON line each: statuses, mean steps, converged structures per core-hour (CPU time of this
process, one thread) and the distinct reasons of the unphysical stops. For comparing
optimiser and unphysical-rule settings, not the potential; docs/benchmarks.md (Relaxation).

    OMP_NUM_THREADS=1 .venv/bin/python -W ignore benchmarks/relax_settings.py \\
        --model MODEL.pt --system MgCaH --n 96 \\
        '{}' '{"energy_rise_reset": 1e-5}' '{"close_contact_patience": 1}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from alcsp.potential import ACNNPotential, load_model
from alcsp.relax import RelaxConfig, relax_structures
from relax_throughput import SYSTEMS, random_structures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="+", help="JSON objects of RelaxConfig fields")
    p.add_argument("--model", type=Path, required=True, help="a saved ACNN model file")
    p.add_argument("--system", choices=sorted(SYSTEMS), default="MgCaH")
    p.add_argument("--n", type=int, default=96, help="random structures")
    p.add_argument("--seed", type=int, default=0, help="relax_throughput.py's --seed")
    p.add_argument("--skin", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)
    system = SYSTEMS[args.system]
    model = load_model(args.model)
    # relax_throughput.py draws its relaxation structures from seed + 1
    structures = random_structures(system, args.n, np.random.default_rng(args.seed + 1))
    for text in args.settings:
        fields = json.loads(text)
        cfg = RelaxConfig(**{"max_steps": 500, "atoms_budget": 1024, **fields})
        c0 = time.process_time()
        res = relax_structures(
            structures, ACNNPotential(model, skin=args.skin), system["pressure"], cfg
        )
        cpu = time.process_time() - c0
        counts = {
            s: sum(r.status == s for r in res) for s in ("converged", "max_steps", "unphysical")
        }
        print(
            json.dumps(
                {
                    "system": args.system,
                    "settings": fields,
                    **counts,
                    "mean_steps": round(float(np.mean([r.steps for r in res])), 1),
                    "converged_per_core_hour": round(counts["converged"] * 3600 / cpu),
                    "cpu_s": round(cpu, 1),
                    "unphysical_reasons": sorted(
                        {r.reason.split(",")[0] for r in res if r.status == "unphysical"}
                    ),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
