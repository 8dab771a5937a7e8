"""The ACNN descriptor: two-body Φ¹ (eq. 7) and three-body Φ² (eq. 9) with species mixing.

Shape letters: N atoms, E radial edges, A angular edges, T species, K Chebyshev basis size,
n descriptor channels, L = (l_max+1)² spherical-harmonic components, M padded angular
neighbours per atom.

Radial basis (eq. 8): f_k(r) = ½[T_k(2(r/r_c − 1)² − 1) + 1]·f_c(r), with the cosine
cutoff f_c of eq. 6. Species awareness follows NEP: the n channels of an (i, j) pair are a
learnable mixture g_n^{Z_i Z_j}(r) = Σ_k c^{Z_i Z_j}_{nk} f_k(r), so the descriptor has the same
size whatever the number of elements, and a quaternary costs no more per atom than a binary.

Three-body term as a power spectrum: with real orthonormal spherical harmonics Y_lm,
    A_{i,n,lm} = Σ_j g_n(r_ij) Y_lm(r̂_ij),   Φ²_{i,nl} = Σ_m A_{i,n,lm}²
        = (2l+1)/(4π) Σ_j Σ_k g_n(r_ij) g_n(r_ik) P_l(cos θ_ijk)       (addition theorem)
which is eq. 9 at O(neighbours) instead of O(neighbours²) cost. A is computed as one
batched matmul over a padded [N, M] neighbour layout, so no (edges × n × L) tensor is ever
materialised; eager PyTorch's per-edge outer product + scatter is memory-bound on exactly
that tensor (DESIGN.md, performance facts).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alcsp.potential.neighbours import Graph


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Eq. 6: ½[1 + cos(π r / r_c)] for r ≤ r_c, else 0. Smooth (C¹) at r_c."""
    fc = 0.5 * (1.0 + torch.cos(r * (math.pi / cutoff)))
    return torch.where(r < cutoff, fc, torch.zeros_like(fc))


def chebyshev_basis(r: torch.Tensor, cutoff: float, size: int) -> torch.Tensor:
    """Eq. 8 for k = 0..size-1: [E] distances -> [E, K] basis values (zero beyond r_c)."""
    x = 2.0 * (r / cutoff - 1.0) ** 2 - 1.0  # [E] in [-1, 1] for r in [0, r_c]
    t = [torch.ones_like(x), x]
    for _ in range(2, size):
        t.append(2.0 * x * t[-1] - t[-2])
    tk = torch.stack(t[:size], dim=1)  # [E, K]
    return (0.5 * (tk + 1.0)) * cosine_cutoff(r, cutoff).unsqueeze(1)


# Normalisation constants of the real orthonormal spherical harmonics, l = 0..4, m = -l..l.
_SQPI = math.sqrt(math.pi)
_YLM_NORM = torch.tensor(
    [
        0.5 / _SQPI,
        math.sqrt(3 / (4 * math.pi)),
        math.sqrt(3 / (4 * math.pi)),
        math.sqrt(3 / (4 * math.pi)),
        0.5 * math.sqrt(15 / math.pi),
        0.5 * math.sqrt(15 / math.pi),
        0.25 * math.sqrt(5 / math.pi),
        0.5 * math.sqrt(15 / math.pi),
        0.25 * math.sqrt(15 / math.pi),
        0.25 * math.sqrt(35 / (2 * math.pi)),
        0.5 * math.sqrt(105 / math.pi),
        0.25 * math.sqrt(21 / (2 * math.pi)),
        0.25 * math.sqrt(7 / math.pi),
        0.25 * math.sqrt(21 / (2 * math.pi)),
        0.25 * math.sqrt(105 / math.pi),
        0.25 * math.sqrt(35 / (2 * math.pi)),
        0.75 * math.sqrt(35 / math.pi),
        0.75 * math.sqrt(35 / (2 * math.pi)),
        0.75 * math.sqrt(5 / math.pi),
        0.75 * math.sqrt(5 / (2 * math.pi)),
        3 / 16 / _SQPI,
        0.75 * math.sqrt(5 / (2 * math.pi)),
        3 / 8 * math.sqrt(5 / math.pi),
        0.75 * math.sqrt(35 / (2 * math.pi)),
        3 / 16 * math.sqrt(35 / math.pi),
    ],
    dtype=torch.float64,
)


def spherical_harmonics(u: torch.Tensor, l_max: int) -> torch.Tensor:
    """Real orthonormal Y_lm of unit vectors: [E, 3] -> [E, (l_max+1)²], order (l, m=-l..l)."""
    if not 0 <= l_max <= 4:
        raise ValueError(f"l_max must be between 0 and 4, got {l_max}")
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    out = [torch.ones_like(x)]
    if l_max >= 1:
        out += [y, z, x]
    if l_max >= 2:
        x2, y2, z2 = x * x, y * y, z * z
        out += [x * y, y * z, 3 * z2 - 1, x * z, x2 - y2]
    if l_max >= 3:
        out += [
            y * (3 * x2 - y2),
            x * y * z,
            y * (5 * z2 - 1),
            z * (5 * z2 - 3),
            x * (5 * z2 - 1),
            z * (x2 - y2),
            x * (x2 - 3 * y2),
        ]
    if l_max >= 4:
        out += [
            x * y * (x2 - y2),
            y * z * (3 * x2 - y2),
            x * y * (7 * z2 - 1),
            y * z * (7 * z2 - 3),
            35 * z2 * z2 - 30 * z2 + 3,
            x * z * (7 * z2 - 3),
            (x2 - y2) * (7 * z2 - 1),
            x * z * (x2 - 3 * y2),
            x2 * (x2 - 3 * y2) - y2 * (3 * x2 - y2),
        ]
    ylm = torch.stack(out, dim=1)  # [E, L]
    return ylm * _YLM_NORM[: ylm.shape[1]].to(dtype=u.dtype, device=u.device)


class Descriptor(nn.Module):
    """Φ¹ [N, n_r] and Φ² [N, n_a·(l_max+1)] of every atom from its edge vectors."""

    def __init__(
        self,
        n_species: int,
        cutoff_radial: float,
        cutoff_angular: float,
        n_radial: int,
        n_angular: int,
        basis_radial: int,
        basis_angular: int,
        l_max: int,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_species = n_species
        self.cutoff_radial = float(cutoff_radial)
        self.cutoff_angular = float(cutoff_angular)
        self.n_radial, self.n_angular = n_radial, n_angular
        self.basis_radial, self.basis_angular = basis_radial, basis_angular
        self.l_max = l_max
        t = n_species
        # Mixing coefficients c^{Z_i Z_j}_{nk}. Radial: [T_j*K, T_i*n] so that one matmul of the
        # per-(atom, neighbour species) basis sums gives every centre species' channels.
        self.mix_radial = nn.Parameter(
            torch.randn(t * basis_radial, t * n_radial, generator=generator)
            / math.sqrt(basis_radial)
        )
        # Angular: one [K, n] block per (species i, species j) pair, in pair-type order.
        self.mix_angular = nn.Parameter(
            torch.randn(t * t, basis_angular, n_angular, generator=generator)
            / math.sqrt(basis_angular)
        )
        # Sums over m of each l: [L, l_max+1] 0/1 matrix.
        lsum = torch.zeros((l_max + 1) ** 2, l_max + 1)
        for l in range(l_max + 1):
            lsum[l * l : (l + 1) * (l + 1), l] = 1.0
        self.register_buffer("l_sum", lsum, persistent=False)

    @property
    def n_features_radial(self) -> int:
        return self.n_radial

    @property
    def n_features_angular(self) -> int:
        return self.n_angular * (self.l_max + 1)

    def forward(
        self, vectors: torch.Tensor, graph: Graph, n_atoms: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vectors [E, 3] -> (Φ¹ [N, n_r], Φ² [N, n_a·(l_max+1)])."""
        t = self.n_species
        dist = torch.sqrt((vectors * vectors).sum(dim=1).clamp_min(1e-20))  # [E]
        species = graph.species  # [N]

        # Two-body: sum the basis per (atom, neighbour species), then mix per centre species.
        f_r = chebyshev_basis(dist, self.cutoff_radial, self.basis_radial)  # [E, K_r]
        sums = vectors.new_zeros(n_atoms * t, self.basis_radial)
        sums = sums.index_add(0, graph.radial_index, f_r)  # [N*T, K_r]
        mixed = sums.reshape(n_atoms, t * self.basis_radial) @ self.mix_radial  # [N, T*n_r]
        phi1 = mixed.reshape(n_atoms, t, self.n_radial)
        phi1 = phi1.gather(1, species.view(-1, 1, 1).expand(-1, 1, self.n_radial))
        phi1 = phi1.squeeze(1)  # [N, n_r]

        # Three-body: per-pair-type mixed radial channels and Y_lm on the angular edges.
        ang = graph.angular_edges
        vec_a, dist_a = vectors[ang], dist[ang]  # [A, 3], [A]
        f_a = chebyshev_basis(dist_a, self.cutoff_angular, self.basis_angular)  # [A, K_a]
        blocks = torch.split(f_a, graph.pair_counts)  # pair-type blocks, in order
        g = (
            torch.cat([b @ self.mix_angular[p] for p, b in enumerate(blocks) if b.shape[0]], dim=0)
            if len(ang)
            else f_a.new_zeros(0, self.n_angular)
        )  # [A, n_a]
        ylm = spherical_harmonics(vec_a / dist_a.unsqueeze(1), self.l_max)  # [A, L]
        n_l = ylm.shape[1]
        m = graph.max_angular
        both = torch.cat([g, ylm], dim=1)  # [A, n_a + L]
        padded = vectors.new_zeros(n_atoms * m, self.n_angular + n_l)
        padded = padded.index_copy(0, graph.angular_slot, both).view(n_atoms, m, -1)
        g_pad, y_pad = padded[:, :, : self.n_angular], padded[:, :, self.n_angular :]
        a_nlm = torch.bmm(g_pad.transpose(1, 2), y_pad)  # [N, n_a, L]
        phi2 = (a_nlm * a_nlm) @ self.l_sum.to(a_nlm.dtype)  # [N, n_a, l_max+1]
        return phi1, phi2.reshape(n_atoms, -1)
