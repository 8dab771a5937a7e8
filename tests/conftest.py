"""Shared fixtures: EMT-labelled Cu–Au structures (EMT is a cheap real potential)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from alcsp.potential.io import labelled


def emt_cuau_structures(n: int, rng: np.random.Generator) -> list[Atoms]:
    """Random-occupancy, strained and rattled fcc Cu–Au cells of 4 or 8 atoms, EMT labels."""
    out = []
    calc = EMT()
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.4 * rng.random(), cubic=True)
        if rng.random() < 0.5:
            atoms = atoms.repeat((2, 1, 1))
        atoms.numbers = rng.choice([29, 79], size=len(atoms))
        atoms.set_cell(
            atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True
        )
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = calc
        out.append(
            labelled(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        )
    return out


@pytest.fixture(scope="session")
def cuau_data() -> tuple[list[Atoms], list[Atoms]]:
    rng = np.random.default_rng(2026)
    return emt_cuau_structures(300, rng), emt_cuau_structures(60, rng)
