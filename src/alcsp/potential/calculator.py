"""ACNN as an ASE calculator: energy, free_energy, forces and stress of one structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from alcsp.potential.forces import ACNNPotential
from alcsp.potential.io import load_model
from alcsp.potential.model import ACNN
from alcsp.structures import StructureBatch


class ACNNCalculator(Calculator):
    """ASE calculator over an ``ACNN`` model (or a model file path).

    ``dtype`` defaults to the model's; ``device`` to CPU. Stress is in the ASE convention
    (eV/Å³, Voigt order xx yy zz yz xz xy). ``skin`` (Å): the neighbour list is built at
    r_c + skin and reused over the following calls (an ASE optimiser's or MD's steps) while
    it provably holds every pair within r_c (``ACNNPotential``); 0 builds it every call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: ACNN | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        skin: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, ACNN):
            model = load_model(model)
        self.potential = ACNNPotential(
            model, device=device, dtype=dtype, backend=backend, skin=skin
        )

    def calculate(self, atoms: Atoms | None = None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = StructureBatch.from_atoms([self.atoms], dtype=self.potential.dtype)
        batch.ids = torch.zeros(1, dtype=torch.long)  # one structure: its list is reused
        out = self.potential.compute(batch)
        energy = float(out.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces.cpu().double().numpy(),
            "stress": full_3x3_to_voigt_6_stress(out.stress[0].cpu().double().numpy()),
        }
        self.results["forces"] = np.ascontiguousarray(self.results["forces"])
