"""Compare a finished EMT campaign with a brute-force search that relaxes every candidate
the campaign screened directly with the oracle (EMT), and with EMT-relaxed prototypes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_bruteforce.py runs/demo

Prints one JSON object: oracle calls of each approach (a brute-force relaxation costs one EMT
call per optimiser step; the campaign's are its single-point labels plus the steps of its
final oracle relaxations), the stable phases each finds and their formation enthalpies.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from alcsp.compositions import composition_key
from alcsp.config import parse_config
from alcsp.hull import build_hull
from alcsp.potential import ASEPotential
from alcsp.relax.runner import relax_structures
from alcsp.store import CampaignStore
from alcsp.store.hulls import labelled_hull


def l12(a: str, b: str, lattice: float) -> Atoms:
    """A3B in the L1_2 (Cu3Au) structure."""
    atoms = bulk(a, "fcc", a=lattice, cubic=True)
    atoms.numbers[0] = Atoms(b).numbers[0]
    return atoms


def l10(a: str, b: str, lattice: float) -> Atoms:
    """AB in the L1_0 (CuAu) structure."""
    atoms = bulk(a, "fcc", a=lattice, cubic=True)
    atoms.numbers[[1, 2]] = Atoms(b).numbers[0]  # one (001) plane of each
    return atoms


def prototypes(elements: tuple[str, ...]) -> list[Atoms]:
    out = []
    for el in elements:
        out += [bulk(el, "fcc", a=3.8), bulk(el, "bcc", a=3.0), bulk(el, "hcp", a=2.7)]
    for a in elements:
        for b in elements:
            if a != b:
                out.append(l12(a, b, 3.8))
                if a < b:
                    out.append(l10(a, b, 3.8))
    return out


def relax_emt(atoms: Atoms) -> tuple[float, int]:
    a = atoms.copy()
    a.calc = EMT()
    opt = BFGS(FrechetCellFilter(a), logfile=None)
    opt.run(fmax=1e-4, steps=500)
    return a.get_potential_energy() / len(a), opt.nsteps


def stable(keys, enthalpy, elements) -> dict[str, float]:
    hull = build_hull(list(keys), np.asarray(enthalpy), elements=elements)
    return {
        hull.keys[hull.comp_index[i]]: round(float(hull.formation[i]) * 1000, 2)
        for i in hull.stable_indices
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("campaign", type=Path)
    args = ap.parse_args()
    with CampaignStore.open(args.campaign, readonly=True) as store:
        cfg = parse_config(store.config_text)
        elements = cfg.elements
        lh = labelled_hull(store, cfg.oracle.name, cfg.campaign.pressure, elements)
        found = {
            lh.hull.keys[lh.hull.comp_index[i]]: round(float(lh.hull.formation[i]) * 1000, 2)
            for i in lh.hull.stable_indices
        }
        n_labels = store.count("labels")
        screened = store.structure_ids(origin="random") + store.structure_ids(origin="initial")
        candidates = store.get_atoms(screened)
        n_acnn = store.count("relaxations")
    final_steps = 0
    for log in sorted(
        (args.campaign / "oracle" / cfg.oracle.name / "final-relax").glob("*/relax.log")
    ):
        final_steps += max(0, len(log.read_text().splitlines()) - 1)  # header + one line/step

    t0 = time.perf_counter()
    results = relax_structures(candidates, ASEPotential(EMT), cfg.campaign.pressure, cfg.relax)
    brute_seconds = time.perf_counter() - t0
    brute_calls = sum(r.steps + 1 for r in results)
    ok = [r for r in results if r.status == "converged"]
    brute = stable(
        [composition_key(r.atoms.get_chemical_formula()) for r in ok],
        [r.enthalpy for r in ok],
        elements,
    )

    protos = prototypes(elements)
    proto_h = [relax_emt(a)[0] for a in protos]
    reference = stable(
        [composition_key(a.get_chemical_formula()) for a in protos], proto_h, elements
    )
    # the best of everything anyone found: prototypes + brute force + campaign labels
    all_keys = [composition_key(a.get_chemical_formula()) for a in protos] + [
        composition_key(r.atoms.get_chemical_formula()) for r in ok
    ]
    all_h = proto_h + [r.enthalpy for r in ok]
    with CampaignStore.open(args.campaign, readonly=True) as store:
        for a in store.training_set(cfg.oracle.name):
            all_keys.append(composition_key(a.get_chemical_formula()))
            all_h.append(a.get_potential_energy() / len(a))
    best = stable(all_keys, all_h, elements)
    print(
        json.dumps(
            {
                "campaign": {
                    "oracle_calls": n_labels + final_steps,
                    "single_points": n_labels,
                    "final_relax_steps": final_steps,
                    "acnn_relaxations": n_acnn,
                    "stable": found,
                },
                "brute_force_same_candidates": {
                    "structures": len(candidates),
                    "converged": len(ok),
                    "oracle_calls": brute_calls,
                    "seconds": round(brute_seconds, 1),
                    "stable": brute,
                },
                "prototypes_relaxed_with_emt": {"structures": len(protos), "stable": reference},
                "union_of_everything": {"stable": best},
                "oracle_call_ratio": round(brute_calls / max(n_labels + final_steps, 1), 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
