"""How well does ACNN, trained on one campaign's labels, rank the structures that decide a
hull? Trains a fresh model on a finished campaign's training set (the campaign's own
``[model]`` and ``[train]``, force cap as the campaign) in a few variants and evaluates it on
the best-known near-hull structures of ``benchmarks/data/best-known/<system>.extxyz``
(every distinct structure within 10 meV/atom of the best-known hull, with EMT energies).

Printed per variant (one JSON line): ``within_comp_std_mev``, the mean over compositions of
the standard deviation of ACNN − EMT energy per atom among that composition's structures
(what decides the ranking inside a composition; a constant offset does not count);
``best_right``, in how many compositions ACNN's lowest is EMT's lowest; ``rmse_mev`` after
removing the mean offset. Variants: ``base`` (the campaign's settings), ``weighted``
(``hull_weight_scale`` = ``--scale``), ``long`` (3× the steps), ``energy10`` (``p_e`` ×
10), ``nearX`` (only the labels within X eV/atom of their own hull; ``near``: 1),
``decorN`` (the labels plus N EMT single points of fcc/hcp/bcc decorations: ``decor40``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ranking_offline.py runs/c1 --seeds 21,22
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from alcsp.config import parse_config
from alcsp.potential import ACNNPotential, train
from alcsp.potential.train import hull_weights
from alcsp.store import CampaignStore
from alcsp.store.hulls import labels_e_hull
from alcsp.structures import StructureBatch
from alcsp.vocab import composition_key

BEST = Path(__file__).parent / "data" / "best-known"


def _decoration_labels(cfg, n: int, seed: int) -> list:
    """``n`` fcc/hcp/bcc decorations of the campaign's compositions (seeded draw, every
    composition in turn), at Vegard volumes, with EMT single points: what the campaign's
    initial data would add if it labelled decorations instead of random cells."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from alcsp.compositions import enumerate_compositions
    from alcsp.decorations import decoration_starts
    from alcsp.generate import start_volume_per_atom

    keys = [e.key for e in enumerate_compositions(cfg.compositions)]
    vol = {el: start_volume_per_atom(el, cfg.generate)[0] for el in cfg.elements}
    starts = decoration_starts(
        ["fcc", "hcp", "bcc"], keys, cfg.elements, cfg.compositions.max_cell_atoms, vol
    )
    rng = np.random.default_rng(seed)
    by: dict[str, list] = {}
    for a in starts:
        by.setdefault(composition_key(a.get_chemical_formula()), []).append(a)
    for v in by.values():
        rng.shuffle(v)
    picks = []
    while len(picks) < n and any(by.values()):
        for k in sorted(by):
            if by[k] and len(picks) < n:
                picks.append(by[k].pop())
    out = []
    for a in picks:
        a = a.copy()
        a.calc = EMT()
        e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)
        a.calc = SinglePointCalculator(a, energy=e, free_energy=e, forces=f, stress=st)
        a.info["structure_id"] = -1
        out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("campaign", type=Path)
    ap.add_argument("--system", default="Cu-Au")
    ap.add_argument("--variants", default="base,weighted,long")
    ap.add_argument("--seeds", default="21", help="training seeds, e.g. 21,22")
    ap.add_argument("--scale", type=float, default=0.05, help="hull_weight_scale, eV/atom")
    ap.add_argument("--floor", type=float, default=0.1, help="hull_weight_floor")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with CampaignStore.open(args.campaign, readonly=True) as store:
        cfg = parse_config(store.config_text)
        data = sorted(store.training_set(cfg.oracle.name), key=lambda a: a.info["structure_id"])
    cap = cfg.campaign.train_max_force
    data = [a for a in data if cap == 0 or float(np.abs(a.get_forces()).max()) <= cap]
    e_hull = labels_e_hull(data, cfg.campaign.pressure, cfg.elements)
    best = read(BEST / f"{args.system}.extxyz", ":")
    e_ref = np.array([a.get_potential_energy() / len(a) for a in best])  # [B] eV/atom
    best_keys = [composition_key(a.get_chemical_formula()) for a in best]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            steps = cfg.train.steps * (3 if variant == "long" else 1)
            tc = replace(
                cfg.train,
                steps=steps,
                decay_every=cfg.train.decay_every * steps // cfg.train.steps,
                seed=seed,
            )
            w = hull_weights(e_hull, args.scale, args.floor) if variant == "weighted" else None
            if variant == "energy10":  # energies weigh 10 times more against forces
                tc = replace(tc, p_e=10 * tc.p_e)
            used = data
            if variant.startswith("decor"):  # + N decoration single points, e.g. decor40
                used = data + _decoration_labels(cfg, int(variant[5:]), seed)
            if variant.startswith("near"):  # only labels within X eV/atom (near1: 1)
                cut = float(variant[4:] or 1.0)
                used = [a for a, e in zip(data, e_hull, strict=True) if e <= cut]
            c0 = time.process_time()
            model, _ = train(used, cfg.model, tc, weights=w)
            pot = ACNNPotential(model, dtype=torch.float64)
            e = []
            for k in range(0, len(best), 16):
                out = pot.compute(StructureBatch.from_atoms(best[k : k + 16], dtype=torch.float64))
                e += list(out.energy.detach().cpu().numpy())
            err = np.array(e) / np.array([len(a) for a in best]) - e_ref  # [B]
            stds, right, n = [], 0, 0
            for key in sorted(set(best_keys)):
                idx = [i for i, x in enumerate(best_keys) if x == key]
                if len(idx) < 2:
                    continue
                n += 1
                stds.append(float(np.std(err[idx])))
                right += int(np.argmin(err[idx] + e_ref[idx]) == np.argmin(e_ref[idx]))
            print(
                json.dumps(
                    {
                        "campaign": str(args.campaign),
                        "variant": variant,
                        "seed": seed,
                        "labels": len(used),
                        "steps": steps,
                        "within_comp_std_mev": round(1000 * float(np.mean(stds)), 2),
                        "best_right": f"{right}/{n}",
                        "rmse_mev": round(1000 * float(np.std(err)), 2),
                        "cpu_s": round(time.process_time() - c0, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
