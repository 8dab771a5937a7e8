"""Training an ACNN committee in worker processes against training one model here.

The demo's model and training settings (``examples/demo-cuau-emt.toml`` [model] and
[train]; ``--steps`` overrides the steps) on ``--labels`` EMT-labelled random Cu–Au cells
(4 or 8 atoms, strained and rattled, as the tests' fixture). Runs, in this order:
  1. one model with ``alcsp.potential.train`` in this process (one thread);
  2. ``train_committee`` with ``--members`` fresh members on ``--workers`` processes.
Prints one JSON line per run: wall seconds, CPU seconds of this process, and the members'
own training seconds (``TrainReport.seconds``: the training loop, without process start-up,
imports and data transfer; the workers are forkserver children, out of reach of
``RUSAGE_CHILDREN``). Then a committee evaluation of the labels (structures per second).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/committee_speed.py \\
        [--labels 100] [--members 4] [--workers 2] [--steps N]

``--stage R``: instead, a campaign's training stage with a committee, the two ways side by
side, interleaved R times: *driver* (model n trained in this process, then the other
members with ``train_committee``, as before 2026-12-03) and *workers* (all members with
``train_models``, one worker process each, as now); medians of wall and of this process's
CPU seconds.

``--single R --threads T``: one model (no committee), trained in this process with T torch
threads against ``train_models`` in one worker with ``threads=T`` (how a campaign trains
without a committee since 2026-12-03), interleaved R times; medians of wall and of this
process's CPU seconds, and whether the two models are bit-identical.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from alcsp.committee import Committee, TrainJob, member_job, train_committee, train_models
from alcsp.potential import ACNNConfig, TrainConfig, train
from alcsp.potential.io import labelled

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-cuau-emt.toml"


def cuau_labels(n: int, rng: np.random.Generator) -> list[Atoms]:
    """Random-occupancy, strained, rattled fcc Cu–Au cells of 4 or 8 atoms, EMT labels."""
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.4 * rng.random(), cubic=True)
        if rng.random() < 0.5:
            atoms = atoms.repeat((2, 1, 1))
        atoms.numbers = rng.choice([29, 79], size=len(atoms))
        atoms.set_cell(
            atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True
        )
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        out.append(
            labelled(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="0 = the demo's [train] steps")
    ap.add_argument("--stage", type=int, default=0, help="repeats of the stage comparison")
    ap.add_argument("--single", type=int, default=0, help="repeats of the one-model comparison")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for --single")
    args = ap.parse_args()
    torch.set_num_threads(args.threads if args.single else 1)
    demo = tomllib.loads(DEMO.read_text())
    model_cfg = ACNNConfig(species=("Cu", "Au"), **demo["model"])
    train_cfg = TrainConfig.from_dict(demo["train"])
    if args.steps:
        train_cfg = replace(train_cfg, steps=args.steps)
    data = cuau_labels(args.labels, np.random.default_rng(0))
    if args.single:
        single_side_by_side(data, model_cfg, train_cfg, args.threads, args.single)
        return
    if args.stage:
        stage_side_by_side(data, model_cfg, train_cfg, args.members, args.workers, args.stage)
        return

    w0, c0 = time.perf_counter(), time.process_time()
    _, report = train(data, model_cfg, train_cfg)
    print(
        json.dumps(
            {
                "run": "one model, this process",
                "steps": train_cfg.steps,
                "labels": len(data),
                "wall_s": round(time.perf_counter() - w0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "train_s": round(report.seconds, 2),
            }
        ),
        flush=True,
    )

    seeds = list(range(1, args.members + 1))
    w0, c0 = time.perf_counter(), time.process_time()
    members = train_committee(data, [model_cfg] * args.members, train_cfg, seeds, args.workers)
    print(
        json.dumps(
            {
                "run": f"committee of {args.members}, {args.workers} workers",
                "steps": train_cfg.steps,
                "labels": len(data),
                "wall_s": round(time.perf_counter() - w0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "member_train_s": [round(r.seconds, 2) for _, r in members],
                "member_validation_force_mev_per_a": [
                    round(r.validation.force_mev_per_a, 1) for _, r in members if r.validation
                ],
            }
        ),
        flush=True,
    )

    committee = Committee([m for m, _ in members])
    w0 = time.perf_counter()
    ev = committee.evaluate(data)
    wall = time.perf_counter() - w0
    print(
        json.dumps(
            {
                "run": f"committee of {args.members}, evaluate the labels",
                "wall_s": round(wall, 3),
                "structures_per_s": round(len(data) / wall, 1),
                "median_force_deviation": round(float(np.median(ev.force_deviation)), 4),
                "median_energy_std_mev": round(1e3 * float(np.median(ev.energy_std)), 2),
            }
        ),
        flush=True,
    )


def stage_side_by_side(data, model_cfg, train_cfg, members: int, workers: int, repeats: int):
    seeds = list(range(2, members + 1))
    times: dict[str, list[tuple[float, float]]] = {"driver": [], "workers": []}
    for _ in range(repeats):
        for way in ("driver", "workers"):
            w0, c0 = time.perf_counter(), time.process_time()
            if way == "driver":
                train(data, model_cfg, train_cfg)
                train_committee(data, [model_cfg] * (members - 1), train_cfg, seeds, workers)
            else:
                jobs = [TrainJob(model_cfg, train_cfg)]
                jobs += [member_job(model_cfg, train_cfg, s) for s in seeds]
                train_models(data, jobs, workers)
            times[way].append((time.perf_counter() - w0, time.process_time() - c0))
    for way, t in times.items():
        print_medians(
            f"train stage, {members} models, {workers} workers: {way}", t, train_cfg, data
        )


def single_side_by_side(data, model_cfg, train_cfg, threads: int, repeats: int):
    times: dict[str, list[tuple[float, float]]] = {"driver": [], "worker": []}
    models = {}
    for _ in range(repeats):
        for way in ("driver", "worker"):
            w0, c0 = time.perf_counter(), time.process_time()
            if way == "driver":
                model, _ = train(data, model_cfg, train_cfg)
            else:
                ((model, _),) = train_models(
                    data, [TrainJob(model_cfg, train_cfg)], 1, threads=threads
                )
            times[way].append((time.perf_counter() - w0, time.process_time() - c0))
            models[way] = model.state_dict()
    same = all(torch.equal(models["driver"][k], models["worker"][k]) for k in models["driver"])
    for way, t in times.items():
        print_medians(
            f"one model, {threads} threads: {way}", t, train_cfg, data, bit_identical=same
        )


def print_medians(run: str, times: list[tuple[float, float]], train_cfg, data, **extra) -> None:
    """One JSON line: the medians of the (wall, driver CPU) seconds of the repeats."""
    row = {
        "run": run,
        "steps": train_cfg.steps,
        "labels": len(data),
        "repeats": len(times),
        "median_wall_s": round(float(np.median([w for w, _ in times])), 2),
        "median_driver_cpu_s": round(float(np.median([c for _, c in times])), 2),
    }
    print(json.dumps(row | extra), flush=True)


if __name__ == "__main__":
    main()
