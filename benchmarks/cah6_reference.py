"""Independent check of the Ca–H 200 GPa proof: relax Im-3m CaH6 (sodalite clathrate,
Wang et al., PNAS 109, 6463 (2012)) with the example's own GPAW settings through the same
oracle relaxation the campaign uses, and print its enthalpy per atom, to compare with the
campaign's best CaH6 and its hull.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cah6_reference.py [WORKDIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import spglib
from ase import Atoms

from alcsp.config import load_config
from alcsp.execute import ExecutorConfig, make_executor
from alcsp.oracle.factory import make_oracle
from alcsp.oracle_relax import relax_with_oracle
from alcsp.units import GPA


def cah6_im3m(a: float = 3.50) -> Atoms:
    """Primitive (7-atom) cell of Im-3m CaH6: Ca 2a, H 12d (1/4, 0, 1/2) in the cubic cell."""
    frac = [(0, 0, 0), (0.5, 0.5, 0.5)]
    h = []
    for x, y, z in [
        (0.25, 0, 0.5),
        (0.75, 0, 0.5),
        (0.5, 0.25, 0),
        (0.5, 0.75, 0),
        (0, 0.5, 0.25),
        (0, 0.5, 0.75),
    ]:
        h += [(x, y, z), ((x + 0.5) % 1, (y + 0.5) % 1, (z + 0.5) % 1)]
    conv = Atoms("Ca2H12", scaled_positions=frac + h, cell=[a, a, a], pbc=True)
    lat, pos, num = spglib.find_primitive(
        (conv.cell.array, conv.get_scaled_positions(), conv.numbers), symprec=1e-3
    )
    return Atoms(numbers=num, scaled_positions=pos, cell=lat, pbc=True)


def main() -> None:
    cfg = load_config("examples/cah-200gpa-gpaw.toml")
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/cah6-reference")
    oracle = make_oracle(cfg.oracle, work)
    prim = cah6_im3m()
    sg = spglib.get_spacegroup((prim.cell.array, prim.get_scaled_positions(), prim.numbers))
    print(f"start: {prim.get_chemical_formula()} {sg}, {prim.get_volume() / len(prim):.3f} Å3/atom")
    ex = make_executor(ExecutorConfig(kind="inline"))
    (r,) = relax_with_oracle(
        oracle, [prim], ["CaH6-Im-3m"], cfg.campaign.pressure, cfg.final.fmax, 100, ex
    )
    ex.close()
    p = cfg.campaign.pressure * GPA
    n = len(r.atoms)
    sg = spglib.get_spacegroup(
        (r.atoms.cell.array, r.atoms.get_scaled_positions(), r.atoms.numbers), symprec=0.05
    )
    print(f"{r.status} after {r.steps} steps, {r.calls} calls; {sg}")
    print(
        f"H = (E0 + PV)/N = {(r.energy_zero + p * r.atoms.get_volume()) / n:.5f} eV/atom; "
        f"V = {r.atoms.get_volume() / n:.3f} Å3/atom; "
        f"P = {-np.trace(r.stress) / 3 / GPA:.1f} GPa"
    )


if __name__ == "__main__":
    main()
