"""The batched-potential interface every energy model in alcsp offers.

The relaxer, the campaign and the benchmarks only need ``compute(batch)``: energies [S],
forces [N, 3] and stresses [S, 3, 3] for a ``StructureBatch``. ACNN implements it natively
over the whole batch; ``ASEPotential`` wraps any ASE calculator (EMT, CHGNet, ...) one
structure at a time, as a second opinion in tests and for teachers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from ase.calculators.calculator import Calculator
from ase.stress import voigt_6_to_full_3x3_stress

from alcsp.structures import PotentialOutput, StructureBatch


@runtime_checkable
class BatchedPotential(Protocol):
    """Anything that maps a batch of structures to energies, forces and stresses."""

    device: torch.device
    dtype: torch.dtype

    def compute(self, batch: StructureBatch) -> PotentialOutput: ...


class ASEPotential:
    """A ``BatchedPotential`` over an ASE calculator, evaluated structure by structure.

    ``make_calculator`` is called once; the same calculator is reused for every structure.
    """

    def __init__(
        self,
        make_calculator: Callable[[], Calculator],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        self.calculator = make_calculator()
        self.dtype = dtype
        self.device = torch.device(device)

    def compute(self, batch: StructureBatch) -> PotentialOutput:
        energies, forces, stresses = [], [], []
        for atoms in batch.to_atoms():
            atoms.calc = self.calculator
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces())
            s = np.asarray(atoms.get_stress(voigt=True))
            stresses.append(voigt_6_to_full_3x3_stress(s))
        dt, dev = self.dtype, self.device
        return PotentialOutput(
            energy=torch.as_tensor(np.array(energies), dtype=dt, device=dev),
            forces=torch.as_tensor(np.concatenate(forces, axis=0), dtype=dt, device=dev),
            stress=torch.as_tensor(np.stack(stresses), dtype=dt, device=dev),
        )
