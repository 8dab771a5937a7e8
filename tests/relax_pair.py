"""A batched Morse pair potential in torch, a fast real potential for the relaxer's tests.

The functional form and smooth cutoff are ASE's ``MorsePotential`` (checked against it in
tests/test_relax.py); r0 may differ per element (the pair uses the mean of the two), which
reduces to ASE's single-r0 form for one element. Neighbours come from vesin per structure.
Used only where the relaxer's batching logic needs many cheap evaluations.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin

from alcsp.structures import PotentialOutput, StructureBatch


def _fcut(r: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """ASE's quintic smooth step: 1 below r0, 0 above r1."""
    s = (1.0 - (r - r0) / (r1 - r0)).clamp(0.0, 1.0)
    return 6.0 * s**5 - 15.0 * s**4 + 10.0 * s**3


class TorchMorse:
    """Morse potential V = eps (e^{-2 rho0 (r/r0 - 1)} - 2 e^{-rho0 (r/r0 - 1)}) x fcut."""

    def __init__(
        self,
        epsilon: float = 1.0,
        rho0: float = 6.0,
        r0: float | dict[int, float] = 1.0,
        rcut1: float = 1.9,
        rcut2: float = 2.7,
        dtype: torch.dtype = torch.float64,
        device: str = "cpu",
    ):
        self.epsilon, self.rho0, self.rcut1, self.rcut2 = epsilon, rho0, rcut1, rcut2
        table = np.zeros(119)
        if isinstance(r0, dict):
            for z, v in r0.items():
                table[z] = v
            self.r0_max = max(r0.values())
        else:
            table[:] = r0
            self.r0_max = r0
        self.r0_table = torch.as_tensor(table, dtype=dtype, device=device)
        self.dtype = dtype
        self.device = torch.device(device)

    def compute(self, batch: StructureBatch) -> PotentialOutput:
        pos_np = batch.positions.detach().cpu().double().numpy()
        cell_np = batch.cell.detach().cpu().double().numpy()
        ptr = batch.ptr.cpu().numpy()
        cutoff = self.rcut2 * self.r0_max
        ii, jj, ss, ee = [], [], [], []
        for s in range(batch.n_structures):  # vesin: one structure at a time
            a, b = ptr[s], ptr[s + 1]
            nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
            i, j, sh = nl.compute(pos_np[a:b], cell_np[s], True, "ijS")
            ii.append(i + a)
            jj.append(j + a)
            ss.append(sh)
            ee.append(np.full(len(i), s))
        t = dict(device=self.device)
        i = torch.as_tensor(np.concatenate(ii), dtype=torch.long, **t)
        j = torch.as_tensor(np.concatenate(jj), dtype=torch.long, **t)
        shift = torch.as_tensor(np.concatenate(ss), dtype=self.dtype, **t)  # [E, 3]
        es = torch.as_tensor(np.concatenate(ee), dtype=torch.long, **t)  # [E]
        pos = batch.positions.to(self.dtype)
        cell = batch.cell.to(self.dtype)
        vec = pos[j] - pos[i] + torch.einsum("ek,ekl->el", shift, cell[es])  # [E, 3]
        vec = vec.detach().requires_grad_(True)
        with torch.enable_grad():
            d = vec.norm(dim=1)  # [E]
            r0 = 0.5 * (self.r0_table[batch.numbers[i]] + self.r0_table[batch.numbers[j]])
            expf = torch.exp(self.rho0 * (1.0 - d / r0))
            pair = self.epsilon * expf * (expf - 2.0) * _fcut(d, self.rcut1 * r0, self.rcut2 * r0)
            energy = pair.new_zeros(batch.n_structures).index_add(0, es, pair)  # [S]
            (de_dv,) = torch.autograd.grad(energy.sum(), vec)
        forces = torch.zeros_like(pos).index_add(0, i, de_dv).index_add(0, j, -de_dv)
        virial = torch.zeros_like(cell).index_add(
            0, es, de_dv[:, :, None] * vec.detach()[:, None, :]
        )  # [S, 3, 3]
        stress = 0.5 * (virial + virial.transpose(1, 2)) / batch.volume()[:, None, None]
        return PotentialOutput(energy=energy.detach(), forces=forces, stress=stress)
