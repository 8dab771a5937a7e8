"""``alcsp generate --composition MgCa2H10 --count 10 --pressure 300 --seed 1 --out out.extxyz``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="random symmetric crystals of one composition",
        description=(
            "Make random crystals (random compatible space group, Wyckoff positions, minimum "
            "distances from scaled covalent radii, pressure-aware volume) and write them to an "
            "extended-XYZ file. Structures that cannot be made are reported with the reason."
        ),
    )
    p.add_argument(
        "--composition",
        required=True,
        help="cell composition, e.g. MgCa2H10 (the cell holds exactly these atoms)",
    )
    p.add_argument("--count", type=int, default=10, help="structures to make (default 10)")
    p.add_argument("--pressure", type=float, default=0.0, help="target pressure, GPa")
    p.add_argument("--seed", type=int, default=None, help="random seed (reproduces a set)")
    p.add_argument("--out", type=Path, required=True, help="extxyz file to write")
    p.add_argument(
        "--distance-factor",
        type=float,
        default=0.7,
        help="minimum distance = factor x (r_cov,i + r_cov,j) x pressure scale",
    )
    p.add_argument(
        "--volume-per-atom",
        type=float,
        default=None,
        help="start volume per atom at the pressure, Å³ (default: model)",
    )
    p.add_argument(
        "--space-groups",
        type=int,
        nargs="+",
        default=None,
        help="allowed space-group numbers (default 1-230)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds allowed per structure")
    p.add_argument("--engine", choices=["fast", "pyxtal"], default="fast")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.io import write
    from pymatgen.core import Composition

    from alcsp.generate import GenerateConfig, StructureGenerator, start_volume_per_atom

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}.")
    try:
        Composition(args.composition)
    except Exception as exc:  # pymatgen raises several types for bad formulas
        raise ValueError(f"--composition {args.composition!r}: cannot parse ({exc}).") from exc
    options = {
        "--pressure": ("pressure_gpa", args.pressure),
        "--distance-factor": ("distance_factor", args.distance_factor),
        "--space-groups": ("space_groups", tuple(args.space_groups) if args.space_groups else None),
        "--timeout": ("attempt_timeout_s", args.timeout),
    }
    for option, (name, value) in options.items():
        try:
            GenerateConfig(**{name: value})
        except ValueError as exc:  # its message names the field: name the option instead
            raise ValueError(f"{option} {value}: {exc}") from None
    cfg = GenerateConfig(
        pressure_gpa=args.pressure,
        distance_factor=args.distance_factor,
        space_groups=tuple(args.space_groups) if args.space_groups else None,
        attempt_timeout_s=args.timeout,
        engine=args.engine,
    )
    try:
        # a formula of unknown elements parses ("Xx2"); the volume model needs them known
        start_volume_per_atom(args.composition, cfg)
    except ValueError as exc:
        raise ValueError(
            f"--composition {args.composition!r}: unknown element ({exc}); give a formula of "
            "real elements, e.g. MgCa2H10"
        ) from None
    res = StructureGenerator(cfg).generate(
        args.composition,
        args.count,
        np.random.default_rng(args.seed),
        volume_per_atom=args.volume_per_atom,
    )
    for f in res.failures:
        print(f"failed: {f.composition}: {f.reason}")
    if res.structures:
        write(args.out, res.structures, format="extxyz")
        groups = ", ".join(str(s.info["space_group"]) for s in res.structures)
        print(f"wrote {len(res.structures)} structures to {args.out} (space groups {groups})")
    if not res.structures:
        raise ValueError(
            f"no structure of {args.composition} could be made; see the reasons above."
        )
    return 0 if not res.failures else 1
