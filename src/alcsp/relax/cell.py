"""Batched Frechet (log-strain) cell parametrisation, as ASE's ``FrechetCellFilter``.

Shape letters: S structures, N atoms (all structures), batch[N] maps an atom to its structure.

Degrees of freedom of one structure (same as ASE's FrechetCellFilter):
  * reference positions u (Å) in the starting cell, the Cartesian positions being r = F u;
  * the log-strain L = log F (3x3), scaled by ``exp_cell_factor`` c (default: the number of
    atoms, ASE's default) so that the optimiser sees x_cell = c L. The cell is
    cell = cell0 F^T (lattice vectors as rows).

Generalised forces (minus the gradient of the enthalpy H = E + P V):
  * on u: f F (row vectors), the Cartesian force pulled back through F;
  * on L: the adjoint Frechet derivative of exp at L applied to W F^-T, where
    W = -V (sigma + P I) is the virial including the pressure term; divided by c on x_cell.

How exp and its derivative are computed, batched in torch (ASE calls scipy ``logm`` and nine
``expm_frechet`` per structure and step, 80% of its cost):
  * no matrix logarithm is ever needed: the state stores L itself, which starts at 0;
  * F = ``torch.linalg.matrix_exp(L)`` on [S, 3, 3];
  * the adjoint Frechet derivative uses <G, Dexp(L)[E]> = <Dexp(L^T)[G], E> and the block
    identity exp([[A, G], [0, A]]) = [[e^A, Dexp(A)[G]], [0, e^A]], so one batched 6x6
    ``matrix_exp`` gives the exact derivative for a general (non-symmetric) L. ASE's
    FrechetCellFilter computes the same quantity; L is not symmetric in general because
    the gradient on L is not, so an eigendecomposition of a symmetric L would not do, and a
    first-order approximation would change the minima reached along the way.
"""

from __future__ import annotations

import torch


def deformation_gradient(log_strain: torch.Tensor) -> torch.Tensor:
    """F = exp(L).  log_strain [S, 3, 3] -> [S, 3, 3]."""
    return torch.linalg.matrix_exp(log_strain)


def expm_frechet_adjoint(log_strain: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Dexp(L^T)[G]: the adjoint of the Frechet derivative of exp at L applied to G.

    log_strain [S, 3, 3], direction [S, 3, 3] -> [S, 3, 3].
    """
    s = log_strain.shape[0]
    lt = log_strain.transpose(1, 2)  # [S, 3, 3]
    block = log_strain.new_zeros(s, 6, 6)  # [S, 6, 6]
    block[:, :3, :3] = lt
    block[:, 3:, 3:] = lt
    block[:, :3, 3:] = direction
    return torch.linalg.matrix_exp(block)[:, :3, 3:]  # [S, 3, 3]


def deform(
    ref_positions: torch.Tensor,
    ref_cell: torch.Tensor,
    F: torch.Tensor,
    batch: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cartesian positions r = F u and cell = cell0 F^T.

    ref_positions [N, 3], ref_cell [S, 3, 3], F [S, 3, 3], batch [N]
    -> positions [N, 3], cell [S, 3, 3].
    """
    # bmm, not einsum: einsum's dispatch costs as much as the arithmetic at these sizes
    positions = torch.bmm(F[batch], ref_positions.unsqueeze(2)).squeeze(2)  # [N, 3]
    cell = ref_cell @ F.transpose(1, 2)  # [S, 3, 3]
    return positions, cell


def generalized_forces(
    forces: torch.Tensor,
    stress: torch.Tensor,
    volume: torch.Tensor,
    pressure: torch.Tensor,
    log_strain: torch.Tensor,
    F: torch.Tensor,
    batch: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minus the enthalpy gradient w.r.t. (u, L), and the residual stress sigma + P I.

    forces [N, 3] eV/Å, stress [S, 3, 3] eV/Å³ (ASE sign), volume [S] Å³, pressure [S] eV/Å³,
    log_strain [S, 3, 3], F [S, 3, 3], batch [N]
    -> atom forces on u [N, 3] eV/Å, force on L [S, 3, 3] eV (not yet divided by the
       cell factor), residual stress [S, 3, 3] eV/Å³ (zero at the target pressure).
    """
    eye = torch.eye(3, dtype=stress.dtype, device=stress.device)
    residual = stress + pressure[:, None, None] * eye  # [S, 3, 3]
    virial = -volume[:, None, None] * residual  # [S, 3, 3], symmetric
    # G = W F^-T, i.e. G^T = F^-1 W^T.
    g = torch.linalg.solve(F, virial.transpose(1, 2)).transpose(1, 2)  # [S, 3, 3]
    cell_force = expm_frechet_adjoint(log_strain, g)  # [S, 3, 3]
    atom_force = torch.bmm(forces.unsqueeze(1), F[batch]).squeeze(1)  # [N, 3]
    return atom_force, cell_force, residual
