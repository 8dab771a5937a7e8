"""The batched structure container shared by the potential, the relaxer and the campaign.

Shape letters used throughout the package:
    S  structures in a batch
    N  atoms in a batch (all structures together)
    E  edges (neighbour pairs) in a batch

A ``StructureBatch`` holds many periodic structures of different sizes and species in
flat tensors, atoms of structure s occupying rows ``ptr[s]:ptr[s+1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

#: Structures with a cell volume per atom below this (Å³) are rejected as degenerate.
MIN_VOLUME_PER_ATOM = 1e-3


class StructureError(ValueError):
    """A structure cannot be used: the message names the problem and the fix."""


def validate_atoms(atoms: Atoms, index: int | None = None) -> None:
    """Raise ``StructureError`` for input no calculation can use.

    Checks: at least one atom, finite positions and cell, known elements, and a
    non-degenerate cell on every periodic axis (fully periodic structures only:
    alcsp works with bulk crystals).
    """
    where = f"structure {index}" if index is not None else "structure"
    if len(atoms) == 0:
        raise StructureError(f"{where} is empty (0 atoms); remove it from the input.")
    numbers = atoms.get_atomic_numbers()
    bad = [int(z) for z in numbers if z <= 0 or z >= len(chemical_symbols)]
    if bad:
        raise StructureError(
            f"{where} has unknown atomic numbers {sorted(set(bad))}; use real elements (1-118)."
        )
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        rows = np.where(~np.isfinite(pos).all(axis=1))[0]
        raise StructureError(
            f"{where} has non-finite (NaN/inf) coordinates on atoms {rows[:10].tolist()}; "
            "fix or drop those atoms."
        )
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.all(np.isfinite(cell)):
        raise StructureError(f"{where} has a non-finite cell {cell.tolist()}.")
    if not all(atoms.pbc):
        raise StructureError(
            f"{where} is not periodic in all three directions (pbc={list(atoms.pbc)}); "
            "alcsp handles bulk crystals: set atoms.pbc = True with a proper cell."
        )
    vol = abs(float(np.linalg.det(cell)))
    if vol / len(atoms) < MIN_VOLUME_PER_ATOM:
        raise StructureError(
            f"{where} has a cell of (near) zero volume ({vol:.3g} Å³ for {len(atoms)} atoms); "
            "give three linearly independent lattice vectors."
        )


@dataclass
class StructureBatch:
    """Many periodic structures in flat tensors (see module docstring for shapes)."""

    positions: torch.Tensor  # [N, 3] Å, Cartesian
    cell: torch.Tensor  # [S, 3, 3] Å, lattice vectors as rows (ASE convention)
    numbers: torch.Tensor  # [N] long, atomic numbers
    ptr: torch.Tensor  # [S+1] long, atom offsets of each structure
    #: [S] long, optional stable identifiers of the structures (e.g. the relaxer's input
    #: indices): a potential may use them to cache per-structure work (``ACNNPotential``
    #: reuses neighbour lists); ``None`` when the caller has none.
    ids: torch.Tensor | None = None

    @property
    def n_structures(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        """[S] long: atoms per structure."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def batch(self) -> torch.Tensor:
        """[N] long: the structure index of each atom."""
        return torch.repeat_interleave(
            torch.arange(self.n_structures, device=self.ptr.device), self.n_atoms
        )

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def volume(self) -> torch.Tensor:
        """[S] cell volumes in Å³."""
        return torch.linalg.det(self.cell).abs()

    def to(self, device=None, dtype=None) -> StructureBatch:
        return StructureBatch(
            positions=self.positions.to(device=device, dtype=dtype),
            cell=self.cell.to(device=device, dtype=dtype),
            numbers=self.numbers.to(device=device),
            ptr=self.ptr.to(device=device),
            ids=None if self.ids is None else self.ids.to(device=device),
        )

    @classmethod
    def from_atoms(
        cls,
        structures: Sequence[Atoms],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        validate: bool = True,
    ) -> StructureBatch:
        """Pack ASE ``Atoms`` into one batch. Validates each structure unless told not to."""
        if len(structures) == 0:
            raise StructureError("no structures given; pass at least one ase.Atoms.")
        if validate:
            for k, a in enumerate(structures):
                validate_atoms(a, k)
        counts = np.array([len(a) for a in structures], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)])
        pos = np.concatenate([a.get_positions() for a in structures], axis=0)
        num = np.concatenate([a.get_atomic_numbers() for a in structures], axis=0)
        cell = np.stack([np.asarray(a.cell.array, dtype=float) for a in structures])
        return cls(
            positions=torch.as_tensor(pos, dtype=dtype, device=device),
            cell=torch.as_tensor(cell, dtype=dtype, device=device),
            numbers=torch.as_tensor(num, dtype=torch.long, device=device),
            ptr=torch.as_tensor(ptr, dtype=torch.long, device=device),
        )

    def to_atoms(self) -> list[Atoms]:
        """Unpack into a list of ASE ``Atoms`` (fully periodic)."""
        pos = self.positions.detach().cpu().double().numpy()
        num = self.numbers.cpu().numpy()
        cell = self.cell.detach().cpu().double().numpy()
        ptr = self.ptr.cpu().numpy()
        return [
            Atoms(
                numbers=num[ptr[s] : ptr[s + 1]],
                positions=pos[ptr[s] : ptr[s + 1]],
                cell=cell[s],
                pbc=True,
            )
            for s in range(self.n_structures)
        ]

    def select(self, index: Sequence[int] | torch.Tensor) -> StructureBatch:
        """A new batch with the structures ``index`` (in that order)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.ptr.device)
        counts = self.n_atoms[idx]
        # atom rows of the selected structures, in order, without a Python loop:
        # start of each selected structure repeated over its atoms + position within it
        out_ptr = torch.cumsum(counts, 0) - counts  # [S'] start of each block in the output
        total = int(counts.sum()) if len(idx) else 0
        owner = torch.repeat_interleave(torch.arange(len(idx), device=self.ptr.device), counts)
        atom_idx = (
            self.ptr[idx][owner] + torch.arange(total, device=self.ptr.device) - out_ptr[owner]
        )  # [N']
        ptr = torch.cat(
            [torch.zeros(1, dtype=torch.long, device=self.ptr.device), torch.cumsum(counts, 0)]
        )
        return StructureBatch(
            positions=self.positions[atom_idx],
            cell=self.cell[idx],
            numbers=self.numbers[atom_idx],
            ptr=ptr,
            ids=None if self.ids is None else self.ids[idx.to(self.ids.device)],
        )


@dataclass
class PotentialOutput:
    """What a batched potential returns for a ``StructureBatch``.

    Stress follows the ASE sign convention, sigma = (1/V) dE/d(strain), in eV/Å³
    (virial W = -V sigma).
    """

    energy: torch.Tensor  # [S] eV
    forces: torch.Tensor  # [N, 3] eV/Å
    stress: torch.Tensor  # [S, 3, 3] eV/Å³
