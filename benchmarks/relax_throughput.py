"""Relaxation throughput: batched BFGS (alcsp.relax) against ASE BFGS + FrechetCellFilter.

For each chemistry (random Mg–Ca–H cells of 20–80 atoms at 300 GPa, random Be–P–N–O cells of
10–60 atoms at 0 GPa, both from ``alcsp.generate``):
  1. label ``--n-label`` random, rattled and strained structures with CHGNet (the teacher;
     its weights ship in the wheel, so this runs offline). The teacher cells may be smaller
     than the relaxed ones (``--label-atoms``, default Mg–Ca–H 4–16 atoms: CHGNet's
     three-body graph of a 20–80-atom cell at ~2.3 Å³/atom does not fit in memory);
     ``--labels-dir DIR`` keeps them (read if they exist, written otherwise). Or, with
     ``--teacher-campaign DIR``, take the oracle labels of an alcsp campaign instead (for
     Mg–Ca–H at 300 GPa, where CHGNet collapses H–H pairs: the GPAW campaign of
     ``benchmarks/mgcah-300gpa-teacher.toml``; see docs/benchmarks.md);
  2. train an ACNN of the paper's hyperparameters (``ACNNConfig`` defaults) on them for
     ``--train-steps`` steps, float32 (``--model FILE``: read if it exists, saved otherwise);
  3. relax ``--n-relax`` fresh random structures with the batched relaxer, once per
     ``--skins`` value (neighbour-list reuse in ``ACNNPotential``; 0 = rebuild every step),
     and the first ``--n-ase`` of them one at a time with ASE BFGS + FrechetCellFilter
     through ``ACNNCalculator`` (same model, same structures, same pressure, fmax 1e-3 eV/Å
     on ASE's generalised forces, same step cap); the batched relaxer is also timed on
     that subset.
Prints one JSON line per chemistry and path: structures per core-hour (CPU time of this
process, one thread) counting every finished structure and counting only the converged
(physical) ones, mean steps, fraction converged, potential steps per second. ASE's
"converged" structures are also checked for close atoms (the batched relaxer's
``min_distance_fraction`` rule), so the two paths count physical minima alike. Paper: 474
(Mg–Ca–H) and 1131 (Be–P–N–O) structures per core-hour.

    OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000 \
    MALLOC_TOP_PAD_=1000000000 .venv/bin/python benchmarks/relax_throughput.py \
        [--n-label 200] [--train-steps 300] [--n-relax 64] [--n-ase 8] [--only MgCaH|BePNO] \
        [--labels-dir DIR] [--skins 0,0.5] [--teacher-campaign DIR --train-max-force 100]
        [--ase-skins 0,0.5] [--min-distance-fraction 0.5] [--close-contact-patience 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from alcsp.generate import GenerateConfig, StructureGenerator
from alcsp.potential import (
    ACNN,
    ACNNCalculator,
    ACNNConfig,
    ACNNPotential,
    TrainConfig,
    load_model,
    read_labelled,
    save_model,
    train,
    write_labelled,
)
from alcsp.relax import RelaxConfig, relax_structures
from alcsp.relax.checks import min_distance_ratio
from alcsp.units import GPA


def mgcah_formula(rng: np.random.Generator, lo: int = 20, hi: int = 80) -> str:
    """Mg_a Ca_b H_c with lo-hi atoms and H/(Mg+Ca) between 2 and 8."""
    while True:
        metals = int(rng.integers(1, 17))
        h = int(round(metals * rng.uniform(2.0, 8.0)))
        if lo <= metals + h <= hi:
            mg = int(rng.integers(0, metals + 1))
            return f"Mg{mg}Ca{metals - mg}H{h}".replace("Mg0", "").replace("Ca0", "")


def bepno_formula(rng: np.random.Generator, lo: int = 10, hi: int = 60) -> str:
    """Be_a P_b N_c O_d, charge neutral (Be2+ P5+ N3- O2-), lo-hi atoms."""
    while True:
        be, p = int(rng.integers(1, 13)), int(rng.integers(1, 9))
        plus = 2 * be + 5 * p
        n = int(rng.integers(0, plus // 3 + 1))
        rest = plus - 3 * n
        if rest % 2:
            continue
        o = rest // 2
        if lo <= be + p + n + o <= hi:
            return f"Be{be}P{p}" + (f"N{n}" if n else "") + (f"O{o}" if o else "")


SYSTEMS = {
    "MgCaH": dict(
        species=("Mg", "Ca", "H"),
        pressure=300.0,
        formula=mgcah_formula,
        paper=474.0,
        label_atoms=(4, 16),
    ),
    "BePNO": dict(
        species=("Be", "P", "N", "O"),
        pressure=0.0,
        formula=bepno_formula,
        paper=1131.0,
        label_atoms=(10, 60),
    ),
}


def random_structures(
    system: dict, count: int, rng: np.random.Generator, atoms: tuple[int, int] | None = None
) -> list[Atoms]:
    gen = StructureGenerator(GenerateConfig(pressure_gpa=system["pressure"]))
    out: list[Atoms] = []
    while len(out) < count:
        formula = system["formula"](rng) if atoms is None else system["formula"](rng, *atoms)
        res = gen.generate(formula, 1, rng)
        out.extend(res.structures)
    return out[:count]


def label_with_chgnet(structures: list[Atoms], rng: np.random.Generator) -> list[Atoms]:
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    labelled = []
    for a in structures:
        a = a.copy()
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True)
        a.rattle(0.05, rng=rng)
        a.calc = calc
        try:
            e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        except (MemoryError, RuntimeError) as err:  # CHGNet's graph of a dense cell: skip it
            print(
                json.dumps(
                    {
                        "stage": "label_skipped",
                        "formula": a.get_chemical_formula(),
                        "error": str(err)[:120],
                    }
                ),
                flush=True,
            )
            continue
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        labelled.append(a)
    return labelled


def campaign_labels(directory: Path, max_force: float | None) -> tuple[list[Atoms], str]:
    """The successful oracle labels of an alcsp campaign without those whose largest force
    component exceeds ``max_force`` eV/Å (None: the campaign's own train_max_force), and a
    tag naming the oracle, the count and the cap."""
    from alcsp.config import parse_config
    from alcsp.store import CampaignStore

    store = CampaignStore.open(directory, readonly=True)
    try:
        cap = parse_config(store.config_text).campaign.train_max_force
        cap = cap if max_force is None else max_force
        labels = store.training_set()
    finally:
        store.close()
    if cap > 0:
        labels = [a for a in labels if np.abs(a.get_forces()).max() <= cap]
    if not labels:
        raise SystemExit(f"{directory}: the campaign has no usable labels yet")
    oracle = labels[0].info["oracle"]
    return labels, f"{oracle}{len(labels)}f{cap:g}"


class TimedPotential:
    """Counts the CPU time spent inside any batched potential, to split it from the
    optimiser's (also used by relax_overhead.py)."""

    def __init__(self, inner):
        self.inner, self.dtype, self.device = inner, inner.dtype, inner.device
        self.cpu, self.calls, self.structures = 0.0, 0, 0

    def compute(self, batch):
        c0 = time.process_time()
        out = self.inner.compute(batch)
        self.cpu += time.process_time() - c0
        self.calls += 1
        self.structures += batch.n_structures
        return out


def ase_relax(
    atoms: Atoms, model: ACNN, pressure: float, cfg: RelaxConfig, skin: float
) -> tuple[bool, int, bool]:
    """(converged, steps, physical): physical = no atoms closer than the relaxer's rule."""
    a = atoms.copy()
    a.calc = ACNNCalculator(model, skin=skin)
    opt = BFGS(FrechetCellFilter(a, scalar_pressure=pressure * GPA), logfile=None)
    converged = opt.run(fmax=cfg.fmax, steps=cfg.max_steps)
    close = min_distance_ratio(a.positions, a.cell.array, a.numbers, cfg.min_distance_fraction)
    vpa = a.get_volume() / len(a)
    physical = not np.isfinite(close[0]) and (
        cfg.min_volume_per_atom <= vpa <= cfg.max_volume_per_atom
    )
    return bool(converged), int(opt.nsteps), bool(physical)


def summary(
    name: str,
    path: str,
    steps: list[int],
    converged: list[bool],
    cpu: float,
    wall: float,
    paper: float | None = None,
) -> dict:
    n = len(steps)
    rec = {
        "system": name,
        "path": path,
        "structures": n,
        "structures_per_core_hour": round(n / (cpu / 3600.0), 1),
        "converged_per_core_hour": round(sum(converged) / (cpu / 3600.0), 1),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "mean_steps": round(float(np.mean(steps)), 1),
        "fraction_converged": round(float(np.mean(converged)), 3),
    }
    if paper is not None:
        rec["paper_structures_per_core_hour"] = paper
    return rec


def labels_and_model(
    name: str, system: dict, args: argparse.Namespace, rng: np.random.Generator
) -> ACNN:
    """CHGNet labels and the trained ACNN, read from ``--labels-dir`` when already there."""
    lo, hi = args.label_atoms.get(name, system["label_atoms"])
    tag = f"{name}_{args.n_label}x{lo}-{hi}_s{args.seed}"
    label_file = model_file = None
    if args.labels_dir is not None:
        args.labels_dir.mkdir(parents=True, exist_ok=True)
        label_file = args.labels_dir / f"{tag}.extxyz"
        model_file = args.labels_dir / f"{tag}_{args.train_steps}steps.pt"
    t0 = time.perf_counter()
    if args.teacher_campaign is not None:
        labelled, tag = campaign_labels(args.teacher_campaign, args.train_max_force)
        if args.labels_dir is not None:
            model_file = args.labels_dir / f"{name}_{tag}_s{args.seed}_{args.train_steps}steps.pt"
    elif label_file is not None and label_file.exists():
        labelled = read_labelled(label_file)
    else:
        labelled = label_with_chgnet(random_structures(system, args.n_label, rng, (lo, hi)), rng)
        if label_file is not None:
            write_labelled(label_file, labelled)
    sizes = [len(a) for a in labelled]
    print(
        json.dumps(
            {
                "system": name,
                "stage": "labels",
                "count": len(labelled),
                "atoms": [min(sizes), max(sizes)],
                "mean_atoms": round(np.mean(sizes), 1),
                "label_s": round(time.perf_counter() - t0, 1),
                "source": str(args.teacher_campaign or label_file or "chgnet"),
            }
        ),
        flush=True,
    )
    if model_file is not None and model_file.exists():
        return load_model(model_file)
    t0 = time.perf_counter()
    tcfg = TrainConfig(
        steps=args.train_steps,
        batch_size=args.train_batch,
        lr=args.lr,
        decay_every=max(args.train_steps // 8, 1),
        lr_decay=0.7,
        eval_every=max(args.train_steps // 10, 1),
        seed=args.seed,
    )
    model, report = train(labelled, ACNNConfig(species=system["species"]), tcfg)
    val = report.validation
    print(
        json.dumps(
            {
                "system": name,
                "stage": "model",
                "labels": len(labelled),
                "train_steps": args.train_steps,
                "train_s": round(time.perf_counter() - t0, 1),
                "validation_rmse": None
                if val is None
                else {
                    "energy_mev_per_atom": round(val.energy_mev_per_atom, 1),
                    "force_mev_per_a": round(val.force_mev_per_a, 1),
                    "stress_gpa": round(val.stress_gpa, 2),
                },
            }
        ),
        flush=True,
    )
    if model_file is not None:
        save_model(model, model_file)
    return model


def run_system(name: str, args: argparse.Namespace) -> None:
    system = SYSTEMS[name]
    rng = np.random.default_rng(args.seed)
    model = labels_and_model(name, system, args, rng)
    structures = random_structures(system, args.n_relax, np.random.default_rng(args.seed + 1))
    cfg = RelaxConfig(
        max_steps=args.max_steps,
        atoms_budget=args.atoms_budget,
        min_distance_fraction=args.min_distance_fraction,
        close_contact_patience=args.close_contact_patience,
    )
    pressure = system["pressure"]

    def batched(subset: list[Atoms], path: str, skin: float, paper: float | None) -> None:
        potential = ACNNPotential(model, skin=skin)
        timed = TimedPotential(potential)
        c0, w0 = time.process_time(), time.perf_counter()
        res = relax_structures(subset, timed, pressure, cfg)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rec = summary(
            name, path, [r.steps for r in res], [r.converged for r in res], cpu, wall, paper
        )
        rec["skin"] = skin
        rec["close_contact_patience"] = cfg.close_contact_patience
        rec["statuses"] = {
            s: sum(r.status == s for r in res) for s in ("converged", "max_steps", "unphysical")
        }
        rec["mean_atoms"] = round(float(np.mean([len(a) for a in subset])), 1)
        rec["batch_steps_per_s_cpu"] = round(timed.calls / cpu, 2)
        rec["structure_steps_per_s_cpu"] = round(timed.structures / cpu, 1)
        rec["potential_cpu_fraction"] = round(timed.cpu / cpu, 3)
        rec["potential_ms_per_step"] = round(1e3 * timed.cpu / timed.calls, 2)
        rec["optimizer_ms_per_step"] = round(1e3 * (cpu - timed.cpu) / timed.calls, 2)
        rec["mean_structures_per_step"] = round(timed.structures / timed.calls, 1)
        rec["pair_lists_built"] = potential.pair_lists_built
        rec["pair_lists_reused"] = potential.pair_lists_reused
        print(json.dumps(rec), flush=True)

    for skin in args.skins:
        batched(structures, "batched", skin, system["paper"])
    subset = structures[: args.n_ase]
    if not subset:
        return
    batched(subset, "batched_on_ase_subset", args.skins[-1], None)
    for skin in args.ase_skins:
        c0, w0 = time.process_time(), time.perf_counter()
        outs = [ase_relax(a, model, pressure, cfg, skin) for a in subset]
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rec = summary(
            name, "ase_bfgs_frechet", [o[1] for o in outs], [o[0] and o[2] for o in outs], cpu, wall
        )
        rec["skin"] = skin
        rec["converged_but_close_atoms"] = sum(o[0] and not o[2] for o in outs)
        rec["mean_atoms"] = round(float(np.mean([len(a) for a in subset])), 1)
        rec["ms_per_step"] = round(1e3 * cpu / max(sum(o[1] for o in outs), 1), 2)
        print(json.dumps(rec), flush=True)


def atoms_ranges(text: str) -> dict[str, tuple[int, int]]:
    """ "MgCaH=4-16,BePNO=10-40" -> {"MgCaH": (4, 16), "BePNO": (10, 40)}."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, rng = part.partition("=")
        lo, _, hi = rng.partition("-")
        if name not in SYSTEMS or not lo.isdigit() or not hi.isdigit() or int(lo) > int(hi):
            raise argparse.ArgumentTypeError(
                f"bad --label-atoms entry {part!r}; use e.g. MgCaH=4-16,BePNO=10-40"
            )
        out[name] = (int(lo), int(hi))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-label", type=int, default=200)
    p.add_argument(
        "--label-atoms",
        type=atoms_ranges,
        default={},
        help="teacher cell sizes, e.g. MgCaH=4-16,BePNO=10-60 (the defaults)",
    )
    p.add_argument("--labels-dir", type=Path, help="keep labels and models here (reused)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--train-batch", type=int, default=4, help="structures per training step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--n-relax", type=int, default=64)
    p.add_argument("--n-ase", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--atoms-budget", type=int, default=1024)
    p.add_argument(
        "--min-distance-fraction",
        type=float,
        default=0.5,
        help="unphysical below this x the covalent-radius sum, both paths (the "
        "relaxer's default 0.5)",
    )
    p.add_argument(
        "--close-contact-patience",
        type=int,
        default=2,
        help="batched path: consecutive distance checks (every 5 steps) that must "
        "find close atoms to stop a running structure (1 = at the first; the "
        "relaxer's default 2); a structure ending with close atoms is unphysical "
        "on both paths whatever this is",
    )
    p.add_argument(
        "--skins",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[0.5],
        help="neighbour-list skins (Å) to run the batched relaxer with, e.g. 0,0.5",
    )
    p.add_argument(
        "--ase-skins",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[0.5],
        help="neighbour-list skins (Å) of ACNNCalculator on the ASE "
        "path, e.g. 0,0.5 (0 = a fresh list every step)",
    )
    p.add_argument(
        "--teacher-campaign",
        type=Path,
        help="train on the oracle labels of this alcsp campaign directory instead "
        "of CHGNet labels (e.g. benchmarks/mgcah-300gpa-teacher.toml's run)",
    )
    p.add_argument(
        "--train-max-force",
        type=float,
        default=None,
        help="with --teacher-campaign: leave out labels with a force component "
        "above this (eV/Å; default the campaign's train_max_force, 0 = none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=sorted(SYSTEMS))
    p.add_argument("--labels-only", action="store_true", help="stop after labels and model")
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in SYSTEMS:
        if args.only is None or args.only == name:
            if args.labels_only:
                labels_and_model(name, SYSTEMS[name], args, np.random.default_rng(args.seed))
            else:
                run_system(name, args)


if __name__ == "__main__":
    main()
