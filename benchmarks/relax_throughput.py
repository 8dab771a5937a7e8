"""Relaxation throughput: batched BFGS (alcsp.relax) against ASE BFGS + FrechetCellFilter.

For each chemistry (random Mg–Ca–H cells of 20–80 atoms at 300 GPa, random Be–P–N–O cells of
10–60 atoms at 0 GPa, both from ``alcsp.generate``):
  1. label ``--n-label`` random, rattled and strained structures with CHGNet (the teacher;
     its weights ship in the wheel, so this runs offline);
  2. train an ACNN of the paper's hyperparameters (``ACNNConfig`` defaults) on them for
     ``--train-steps`` steps, float32;
  3. relax ``--n-relax`` fresh random structures with the batched relaxer, and the first
     ``--n-ase`` of them one at a time with ASE BFGS + FrechetCellFilter through
     ``ACNNCalculator`` (same model, same structures, same pressure, fmax 1e-3 eV/Å on ASE's
     generalised forces, same step cap); the batched relaxer is also timed on that subset.
Prints one JSON line per chemistry and path: structures per core-hour (CPU time of this
process, one thread), mean steps, fraction converged. Paper: 474 (Mg–Ca–H) and 1131
(Be–P–N–O) structures per core-hour.

    OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000 \
    MALLOC_TOP_PAD_=1000000000 .venv/bin/python benchmarks/relax_throughput.py \
        [--n-label 200] [--train-steps 300] [--n-relax 64] [--n-ase 8] [--only MgCaH|BePNO]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from alcsp.generate import GenerateConfig, StructureGenerator
from alcsp.potential import ACNN, ACNNCalculator, ACNNConfig, ACNNPotential, TrainConfig, train
from alcsp.relax import RelaxConfig, relax_structures
from alcsp.units import GPA


def mgcah_formula(rng: np.random.Generator) -> str:
    """Mg_a Ca_b H_c with 20-80 atoms and H/(Mg+Ca) between 2 and 8."""
    while True:
        metals = int(rng.integers(3, 17))
        h = int(round(metals * rng.uniform(2.0, 8.0)))
        if 20 <= metals + h <= 80:
            mg = int(rng.integers(0, metals + 1))
            return f"Mg{mg}Ca{metals - mg}H{h}".replace("Mg0", "").replace("Ca0", "")


def bepno_formula(rng: np.random.Generator) -> str:
    """Be_a P_b N_c O_d, charge neutral (Be2+ P5+ N3- O2-), 10-60 atoms."""
    while True:
        be, p = int(rng.integers(1, 13)), int(rng.integers(1, 9))
        plus = 2 * be + 5 * p
        n = int(rng.integers(0, plus // 3 + 1))
        rest = plus - 3 * n
        if rest % 2:
            continue
        o = rest // 2
        if 10 <= be + p + n + o <= 60:
            return f"Be{be}P{p}" + (f"N{n}" if n else "") + (f"O{o}" if o else "")


SYSTEMS = {
    "MgCaH": dict(species=("Mg", "Ca", "H"), pressure=300.0, formula=mgcah_formula,
                  paper=474.0),
    "BePNO": dict(species=("Be", "P", "N", "O"), pressure=0.0, formula=bepno_formula,
                  paper=1131.0),
}


def random_structures(system: dict, count: int, rng: np.random.Generator) -> list[Atoms]:
    gen = StructureGenerator(GenerateConfig(pressure_gpa=system["pressure"]))
    out: list[Atoms] = []
    while len(out) < count:
        res = gen.generate(system["formula"](rng), 1, rng)
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
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        labelled.append(a)
    return labelled


class TimedPotential:
    """Counts the CPU time spent inside the potential, to split it from the optimiser's."""

    def __init__(self, inner: ACNNPotential):
        self.inner, self.dtype, self.device = inner, inner.dtype, inner.device
        self.cpu, self.calls, self.structures = 0.0, 0, 0

    def compute(self, batch):
        c0 = time.process_time()
        out = self.inner.compute(batch)
        self.cpu += time.process_time() - c0
        self.calls += 1
        self.structures += batch.n_structures
        return out


def ase_relax(atoms: Atoms, model: ACNN, pressure: float, cfg: RelaxConfig) -> tuple[bool, int]:
    a = atoms.copy()
    a.calc = ACNNCalculator(model)
    opt = BFGS(FrechetCellFilter(a, scalar_pressure=pressure * GPA), logfile=None)
    converged = opt.run(fmax=cfg.fmax, steps=cfg.max_steps)
    return bool(converged), int(opt.nsteps)


def summary(name: str, path: str, results_steps: list[int], converged: list[bool], cpu: float,
            wall: float, paper: float | None = None) -> dict:
    n = len(results_steps)
    rec = {
        "system": name, "path": path, "structures": n,
        "structures_per_core_hour": round(n / (cpu / 3600.0), 1),
        "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
        "mean_steps": round(float(np.mean(results_steps)), 1),
        "fraction_converged": round(float(np.mean(converged)), 3),
    }
    if paper is not None:
        rec["paper_structures_per_core_hour"] = paper
    return rec


def run_system(name: str, args: argparse.Namespace) -> None:
    system = SYSTEMS[name]
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    labelled = label_with_chgnet(random_structures(system, args.n_label, rng), rng)
    t_label = time.perf_counter() - t0
    print(json.dumps({"system": name, "stage": "labels", "count": len(labelled),
                      "label_s": round(t_label, 1)}), flush=True)
    t0 = time.perf_counter()
    tcfg = TrainConfig(steps=args.train_steps, batch_size=args.train_batch, lr=2e-3,
                       decay_every=100, lr_decay=0.8, eval_every=args.train_steps,
                       seed=args.seed)
    model, report = train(labelled, ACNNConfig(species=system["species"]), tcfg)
    t_train = time.perf_counter() - t0
    print(json.dumps({
        "system": name, "stage": "model", "labels": len(labelled),
        "label_s": round(t_label, 1), "train_steps": args.train_steps,
        "train_s": round(t_train, 1),
        "validation_rmse": None if report.validation is None else {
            "energy_mev_per_atom": round(report.validation.energy_mev_per_atom, 1),
            "force_mev_per_a": round(report.validation.force_mev_per_a, 1),
        },
    }), flush=True)

    structures = random_structures(system, args.n_relax, rng)
    cfg = RelaxConfig(max_steps=args.max_steps, atoms_budget=args.atoms_budget)
    potential = ACNNPotential(model)
    pressure = system["pressure"]

    def batched(subset: list[Atoms], path: str, paper: float | None) -> None:
        timed = TimedPotential(potential)
        c0, w0 = time.process_time(), time.perf_counter()
        res = relax_structures(subset, timed, pressure, cfg)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rec = summary(name, path, [r.steps for r in res], [r.converged for r in res], cpu,
                      wall, paper)
        rec["statuses"] = {s: sum(r.status == s for r in res)
                           for s in ("converged", "max_steps", "unphysical")}
        rec["mean_atoms"] = round(float(np.mean([len(a) for a in subset])), 1)
        rec["potential_cpu_fraction"] = round(timed.cpu / cpu, 3)
        rec["optimizer_ms_per_step"] = round(1e3 * (cpu - timed.cpu) / timed.calls, 2)
        rec["mean_structures_per_step"] = round(timed.structures / timed.calls, 1)
        print(json.dumps(rec), flush=True)

    batched(structures, "batched", system["paper"])
    subset = structures[: args.n_ase]
    batched(subset, "batched_on_ase_subset", None)
    c0, w0 = time.process_time(), time.perf_counter()
    outs = [ase_relax(a, model, pressure, cfg) for a in subset]
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(json.dumps(summary(name, "ase_bfgs_frechet", [o[1] for o in outs],
                             [o[0] for o in outs], cpu, wall)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-label", type=int, default=200)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--train-batch", type=int, default=4, help="structures per training step")
    p.add_argument("--n-relax", type=int, default=64)
    p.add_argument("--n-ase", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--atoms-budget", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=sorted(SYSTEMS))
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in SYSTEMS:
        if args.only is None or args.only == name:
            run_system(name, args)


if __name__ == "__main__":
    main()
