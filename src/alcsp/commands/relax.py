"""``alcsp relax IN.extxyz --model MODEL --pressure GPA --out OUT.extxyz``: batched relaxation.

Every input structure comes out, in input order, with info keys ``relax_status``
(converged / max_steps / unphysical), ``relax_reason``, ``relax_steps``,
``enthalpy_per_atom`` (eV/atom), ``pressure_gpa`` and ``volume_per_atom`` (Å³/atom), and the
potential's energy, forces and stress at the final geometry as calculator results.
``--emt`` relaxes with ASE's EMT instead of a model (metals Al Cu Ag Au Ni Pd Pt; demos).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alcsp.potential import BatchedPotential


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "relax",
        help="relax structures (batched BFGS, variable cell, under pressure)",
        description=(
            "Relax every structure of an extended-XYZ file with the batched BFGS relaxer: "
            "positions and cell (unless --fixed-cell) at the given pressure, minimising the "
            "enthalpy. Converged, unconverged and unphysical outcomes are all written out."
        ),
    )
    p.add_argument("input", type=Path, help="structures to relax (extended XYZ or any ASE format)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="ACNN model file (from alcsp train)")
    src.add_argument("--emt", action="store_true", help="use ASE's EMT potential (demo metals)")
    p.add_argument("--out", type=Path, required=True, help="output extended-XYZ file")
    p.add_argument("--pressure", type=float, default=0.0, help="target pressure in GPa (0)")
    p.add_argument("--fmax", type=float, help="force tolerance per component, eV/Å (1e-3)")
    p.add_argument("--energy-tol", type=float, help="enthalpy change tolerance, eV/atom (1e-6)")
    p.add_argument("--stress-tol", type=float, help="stress tolerance |sigma + P|, GPa (0.01)")
    p.add_argument("--max-steps", type=int, help="step cap per structure (500)")
    p.add_argument("--atoms-budget", type=int, help="atoms evaluated together (1024)")
    p.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (model only)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="model dtype (model's own)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from ase.io import read, write
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alcsp.relax import RelaxConfig, relax_structures

    console = Console(stderr=True)
    if not args.input.is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    settings = {
        name: getattr(args, name)
        for name in ("fmax", "energy_tol", "stress_tol", "max_steps", "atoms_budget")
        if getattr(args, name) is not None
    }
    if not math.isfinite(args.pressure):
        raise ValueError(f"--pressure must be a finite number of GPa, got {args.pressure}")
    config = RelaxConfig(fixed_cell=args.fixed_cell, **settings)
    try:
        structures = read(args.input, index=":")
    except Exception as exc:  # ASE raises many kinds for a bad file
        raise ValueError(f"cannot read structures from {args.input}: {exc}") from exc
    if not isinstance(structures, list):  # one Atoms, in ASE's type; index=":" gives a list
        structures = [structures]
    if not structures:
        raise ValueError(f"{args.input} holds no structures")

    potential: BatchedPotential
    if args.emt:
        from ase.calculators.emt import EMT

        from alcsp.potential import ASEPotential

        potential = ASEPotential(EMT)
    else:
        from alcsp.potential import ACNNPotential, load_model

        if not args.model.is_file():
            raise FileNotFoundError(f"model file {args.model} does not exist")
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(args.dtype)
        potential = ACNNPotential(load_model(args.model, device=args.device), dtype=dtype)

    with Progress(
        TextColumn("relaxing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("relax", total=len(structures))
        results = relax_structures(
            structures,
            potential,
            args.pressure,
            config,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, [r.atoms for r in results], format="extxyz")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    console.print(
        f"relaxed {len(results)} structures at {args.pressure} GPa: {summary} -> {args.out}"
    )
    return 0
