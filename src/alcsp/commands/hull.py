"""``alcsp hull FILE... [--pressure GPa] [--reference FILE...] [--plot hull.png]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hull",
        help="convex hull and E_hull of structures with energies",
        description=(
            "Read structures with total energies (extxyz, energy=... in the comment line), "
            "compute enthalpies per atom H = (E + PV)/N at --pressure, and print the stable "
            "phases and the E_hull of every structure (meV/atom). Reference phases (--reference) "
            "take part in the hull and are marked."
        ),
    )
    p.add_argument("files", type=Path, nargs="+", help="extxyz files with energies")
    p.add_argument("--pressure", type=float, default=0.0, help="pressure for PV, GPa")
    p.add_argument(
        "--reference",
        nargs="+",
        default=[],
        metavar="FILE[=H]",
        help="known reference phases: extxyz with energies, or FILE=H for a file without "
        "energies (e.g. MgH2.cif=-1.234, H in eV/atom at --pressure)",
    )
    p.add_argument(
        "--elements",
        nargs="+",
        default=None,
        help="the chemical system (default: the elements present)",
    )
    p.add_argument("--plot", type=Path, default=None, help="write a hull plot (png/pdf/svg)")
    p.add_argument(
        "--max-e-hull",
        type=float,
        default=float("inf"),
        help="list only entries up to this E_hull, meV/atom",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.hull import build_hull_from_entries, read_entries

    if not (math.isfinite(args.pressure) and args.pressure > -1):
        raise ValueError(f"--pressure must be a finite number of GPa > -1, got {args.pressure}")
    entries = []
    for f in args.files:
        entries += read_entries(f, args.pressure)
    for spec in args.reference:
        path, _, h = spec.partition("=")
        try:
            enthalpy = float(h) if h else None
        except ValueError as exc:
            raise ValueError(
                f"--reference {spec!r}: the enthalpy after '=' must be a number (eV/atom)."
            ) from exc
        entries += read_entries(Path(path), args.pressure, is_reference=True, enthalpy=enthalpy)
    res = build_hull_from_entries(entries, elements=args.elements)
    print(
        f"system {'-'.join(res.elements)} at {args.pressure:g} GPa: {len(entries)} entries, "
        f"{len(res.keys)} compositions"
    )
    print("stable phases:")
    for i in res.stable_indices:
        ref = "  (reference)" if res.is_reference[i] else ""
        print(
            f"  {res.keys[res.comp_index[i]]:<14} {res.ids[i]:<24} "
            f"H_form {res.formation[i] * 1000:9.1f} meV/atom{ref}"
        )
    print(f"{'id':<24} {'composition':<14} {'H (eV/atom)':>12} {'H_form':>9} {'E_hull':>9}  ref")
    for row in sorted(res.table(), key=lambda r: (r["e_hull_mev"], r["id"])):
        if row["e_hull_mev"] > args.max_e_hull:
            continue
        print(
            f"{row['id']:<24} {row['composition']:<14} {row['enthalpy_per_atom']:12.5f} "
            f"{row['formation_per_atom'] * 1000:9.1f} {row['e_hull_mev']:9.1f}  "
            f"{'yes' if row['is_reference'] else ''}"
        )
    if args.plot is not None:
        from alcsp.hull_plot import plot_hull

        print(f"wrote {plot_hull(res, args.plot)}")
    return 0
