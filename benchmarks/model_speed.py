"""ACNN speed: µs per atom for energy + forces + stress, paper hyperparameters, one thread.

Prints one JSON line per case. Cases (issue 2): random 40-atom Mg–Ca–H cells at 2.25 Å³/atom
(~300 GPa density) and random 30-atom Be–P–N–O cells at ~9 Å³/atom, batch 8, float32.
``model_us_per_atom`` times the model on a prebuilt neighbour graph (what training and a
relaxation step with a reused graph pay); ``total_us_per_atom`` includes building the graph
with vesin every call.

``--repulsion compare`` times the model with its ZBL prior and without it side by side (two
models with the same weights, calls interleaved within each repeat, medians of wall time and of
CPU time, time.process_time), and prints the ratio measured in that one run; ``zbl`` or ``none``
time one model as before (default: ``zbl``, the ACNNConfig default).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_speed.py [--repeats 20] [--dtype float32]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_speed.py --repulsion compare --repeats 40
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms

from alcsp.potential import ACNN, ACNNConfig, energy_forces_stress, graph_for
from alcsp.structures import StructureBatch


def random_cell(symbols: list[str], vol_per_atom: float, rng: np.random.Generator) -> Atoms:
    """Random atoms in a mildly skewed cell, no pair closer than 0.7 of the mean spacing."""
    n = len(symbols)
    length = (vol_per_atom * n) ** (1 / 3)
    cell = np.eye(3) * length + rng.normal(0, 0.05 * length, (3, 3))
    cell *= (vol_per_atom * n / abs(np.linalg.det(cell))) ** (1 / 3)
    dmin = 0.7 * vol_per_atom ** (1 / 3)
    frac: list[np.ndarray] = []
    while len(frac) < n:
        f = rng.random(3)
        if frac:
            d = np.array(frac) - f
            d -= np.round(d)
            if np.linalg.norm(d @ cell, axis=1).min() < dmin:
                continue
        frac.append(f)
    return Atoms(symbols=symbols, scaled_positions=np.array(frac), cell=cell, pbc=True)


CASES = {
    "MgCaH_40atoms_2.25A3": dict(
        species=("Mg", "Ca", "H"),
        symbols=["Mg"] * 4 + ["Ca"] * 4 + ["H"] * 32,
        vol=2.25,
        cutoffs=(5.0, 4.0),
    ),
    "BePNO_30atoms_9A3": dict(
        species=("Be", "P", "N", "O"),
        symbols=["Be"] * 6 + ["P"] * 6 + ["N"] * 8 + ["O"] * 10,
        vol=9.0,
        cutoffs=(5.0, 4.0),
    ),
}


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _model(case: dict, repulsion: str, device: str, dtype: torch.dtype) -> ACNN:
    config = ACNNConfig(
        species=case["species"],
        cutoff_radial=case["cutoffs"][0],
        cutoff_angular=case["cutoffs"][1],
        repulsion=repulsion,
    )
    return ACNN(config).to(device=device, dtype=dtype)


def _us(seconds: list[float], n: int) -> float:
    return round(1e6 * float(np.median(seconds)) / n, 2)


def compare_repulsion(name: str, case: dict, batch: StructureBatch, args) -> dict:
    """Model µs/atom with and without the ZBL prior, interleaved, on one prebuilt graph."""
    dtype = getattr(torch, args.dtype)
    models = {rep: _model(case, rep, args.device, dtype) for rep in ("zbl", "none")}
    graph = graph_for(models["zbl"], batch)
    n = batch.positions.shape[0]
    rep = models["zbl"].repulsion
    assert rep is not None
    d = torch.linalg.vector_norm(graph.radial.vector, dim=-1).double()  # [N, R]
    r_out = rep.r_out[graph.species.unsqueeze(1), graph.radial.species]  # [N, R]
    close = int(((d < r_out) & graph.radial.used).sum())  # slots the prior acts on
    for _ in range(3):  # warm-up
        for model in models.values():
            energy_forces_stress(model, batch, graph)
    wall: dict[str, list[float]] = {"zbl": [], "none": []}
    cpu: dict[str, list[float]] = {"zbl": [], "none": []}
    for k in range(args.repeats):
        order = ("zbl", "none") if k % 2 == 0 else ("none", "zbl")  # alternate who goes first
        for key in order:
            w, c = _timed(lambda m=models[key]: energy_forces_stress(m, batch, graph))
            wall[key].append(w)
            cpu[key].append(c)
    ratio_wall = [a / b for a, b in zip(wall["zbl"], wall["none"], strict=True)]
    ratio_cpu = [a / b for a, b in zip(cpu["zbl"], cpu["none"], strict=True)]
    return {
        "case": name,
        "dtype": args.dtype,
        "device": args.device,
        "batch": args.batch,
        "atoms": n,
        "repeats": args.repeats,
        "neighbours_angular": round(int(graph.angular.used.sum()) / n, 1),
        "slots_within_r_out_per_atom": round(close / n, 2),
        "wall_us_per_atom_zbl": _us(wall["zbl"], n),
        "wall_us_per_atom_none": _us(wall["none"], n),
        "cpu_us_per_atom_zbl": _us(cpu["zbl"], n),
        "cpu_us_per_atom_none": _us(cpu["none"], n),
        "ratio_of_medians_wall": round(float(np.median(wall["zbl"]) / np.median(wall["none"])), 4),
        "ratio_of_medians_cpu": round(float(np.median(cpu["zbl"]) / np.median(cpu["none"])), 4),
        "median_paired_ratio_wall": round(float(np.median(ratio_wall)), 4),
        "median_paired_ratio_cpu": round(float(np.median(ratio_cpu)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repulsion", default="zbl", choices=["zbl", "none", "compare"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(0)
    for name, case in CASES.items():
        atoms = [random_cell(case["symbols"], case["vol"], rng) for _ in range(args.batch)]
        batch = StructureBatch.from_atoms(atoms, dtype=dtype, device=args.device)
        if args.repulsion == "compare":
            print(json.dumps(compare_repulsion(name, case, batch, args)))
            continue
        model = _model(case, args.repulsion, args.device, dtype)
        n = batch.positions.shape[0]
        graph = graph_for(model, batch)
        nbr_r = int(graph.radial.used.sum()) / n
        nbr_a = int(graph.angular.used.sum()) / n
        for _ in range(3):  # warm-up
            energy_forces_stress(model, batch, graph)
        model_t, total_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            energy_forces_stress(model, batch, graph)
            t1 = time.perf_counter()
            energy_forces_stress(model, batch)
            t2 = time.perf_counter()
            model_t.append(t1 - t0)
            total_t.append(t2 - t1)
        print(
            json.dumps(
                {
                    "case": name,
                    "dtype": args.dtype,
                    "device": args.device,
                    "batch": args.batch,
                    "repulsion": args.repulsion,
                    "atoms": n,
                    "neighbours_radial": round(nbr_r, 1),
                    "neighbours_angular": round(nbr_a, 1),
                    "model_us_per_atom": round(1e6 * float(np.median(model_t)) / n, 1),
                    "total_us_per_atom": round(1e6 * float(np.median(total_t)) / n, 1),
                    "us_per_atom": round(1e6 * float(np.median(total_t)) / n, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
