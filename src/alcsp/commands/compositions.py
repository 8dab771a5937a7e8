"""``alcsp compositions CONFIG``: print the composition space of a ``[compositions]`` table."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compositions",
        help="enumerate the composition space of a config",
        description=(
            "Enumerate the irreducible compositions allowed by the [compositions] table of a "
            "TOML file (fields documented in alcsp.compositions) and the formula units "
            "searched for each."
        ),
    )
    p.add_argument("config", type=Path, help="TOML file with a [compositions] table")
    p.add_argument("--quiet", action="store_true", help="print only the counts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alcsp.compositions import enumerate_compositions
    from alcsp.config import load_compositions

    space = enumerate_compositions(load_compositions(args.config))
    if not args.quiet:
        width = max(len(e.key) for e in space)
        for e in space:
            z = ",".join(str(z) for z in e.formula_units)
            print(
                f"{e.key:<{width}}  atoms/f.u. {int(e.composition.num_atoms):3d}  "
                f"z={z}  [{'+'.join(e.sources)}]"
            )
    print(
        f"{len(space)} irreducible compositions, {space.n_cells} (composition, formula units) "
        f"cells; elements {'-'.join(space.rules.elements)}"
    )
    return 0
