"""The ACNN descriptor: two-body Φ¹ (eq. 7) and three-body Φ² (eq. 9) with species mixing.

Shape letters: N atoms, R radial and Q angular neighbour slots per atom (padded, see
``neighbours.py``), T species, K Chebyshev basis size, n descriptor channels,
L = (l_max+1)² spherical-harmonic components, P = 35 monomials of degree ≤ 4.

Radial basis (eq. 8): f_k(r) = ½[T_k(2(r/r_c − 1)² − 1) + 1]·f_c(r), with the cosine
cutoff f_c of eq. 6. Species awareness follows NEP: the n channels of an (i, j) pair are a
learnable mixture g_n^{Z_i Z_j}(r) = Σ_k c^{Z_i Z_j}_{nk} f_k(r), so the descriptor has the same
size whatever the number of elements and a quaternary costs no more per atom than a binary.
By linearity the mixing is applied after the sum over neighbours:
    Φ¹_{i,n} = Σ_{s,k} c^{Z_i s}_{nk} Σ_{j∈s} f_k(r_ij)

Three-body term as a power spectrum: with real orthonormal spherical harmonics Y_lm,
    A_{i,n,lm} = Σ_j g_n(r_ij) Y_lm(r̂_ij),   Φ²_{i,nl} = Σ_m A_{i,n,lm}²
        = (2l+1)/(4π) Σ_j Σ_k g_n(r_ij) g_n(r_ik) P_l(cos θ_ijk)       (addition theorem)
which is eq. 9 at O(neighbours) instead of O(neighbours²) cost. A is computed as
A_i = c^{Z_i} · (X_iᵀ U_i) · C with X_i [Q, T·K] the species-blocked radial basis of i's
neighbours, U_i [Q, P] the monomials of r̂_ij and C [P, L] the fixed monomial-to-Y_lm map:
one batched matmul over the slot axis, never an (edges × n × L) tensor.
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
    """Reference eq. 8 by the Chebyshev recurrence: [...] distances -> [..., K].

    Plain autograd; the model uses ``RadialBasis`` (same values, hand-written derivative).
    """
    x = 2.0 * (r / cutoff - 1.0) ** 2 - 1.0
    t = [torch.ones_like(x), x]
    for _ in range(2, size):
        t.append(2.0 * x * t[-1] - t[-2])
    tk = torch.stack(t[:size], dim=-1)
    return (0.5 * (tk + 1.0)) * cosine_cutoff(r, cutoff).unsqueeze(-1)


class RadialBasis(torch.autograd.Function):
    """Eq. 8 with its r-derivative computed in the forward pass (f and ∂f/∂r together).

    With x = cos θ, θ = 2·arccos(1 − r/r_c), T_k(x) = cos(kθ): one vectorised pass over K
    instead of a K-step recurrence, and a backward that is a single multiply-and-sum. Autograd
    through the recurrence records ~4K elementwise ops per call on the largest tensors of the
    model. The backward is written in differentiable torch ops, so force-matching losses
    (create_graph=True) still reach every parameter.
    """

    @staticmethod
    def forward(ctx, r: torch.Tensor, cutoff: float, size: int) -> torch.Tensor:
        s = r / cutoff  # [...]
        inside = s < 1.0
        k = torch.arange(size, dtype=r.dtype, device=r.device)
        theta = 2.0 * torch.arccos((1.0 - s).clamp(-1.0, 1.0))
        dtheta = 2.0 / (cutoff * torch.sqrt((s * (2.0 - s)).clamp_min(1e-12)))
        kt = theta.unsqueeze(-1) * k  # [..., K]
        cos_kt, sin_kt = torch.cos(kt), torch.sin(kt)
        fc = torch.where(inside, 0.5 * (1.0 + torch.cos(math.pi * s)), 0.0)
        dfc = torch.where(inside, (-0.5 * math.pi / cutoff) * torch.sin(math.pi * s), 0.0)
        half_t1 = 0.5 * (cos_kt + 1.0)
        f = half_t1 * fc.unsqueeze(-1)
        df = (-0.5 * k) * sin_kt * (dtheta * fc).unsqueeze(-1) + half_t1 * dfc.unsqueeze(-1)
        ctx.save_for_backward(df)
        return f

    @staticmethod
    def backward(ctx, grad_f: torch.Tensor):
        (df,) = ctx.saved_tensors
        return (grad_f * df).sum(-1), None, None


# Monomials x^a y^b z^c of degree ≤ 4 (P = 35), each built as (an earlier monomial) × (x|y|z).
def _monomial_plan() -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    exps = [(0, 0, 0)]
    for deg in range(1, 5):
        for a in range(deg, -1, -1):
            for b in range(deg - a, -1, -1):
                exps.append((a, b, deg - a - b))
    plan = []  # for each monomial of degree ≥ 1: (index of the factor monomial, axis)
    for e in exps[1:]:
        axis = next(c for c in range(3) if e[c] > 0)
        lower = list(e)
        lower[axis] -= 1
        plan.append((exps.index((lower[0], lower[1], lower[2])), axis))
    return exps, plan


_MONOMIALS, _MONOMIAL_PLAN = _monomial_plan()


def monomials(u: torch.Tensor) -> torch.Tensor:
    """[..., 3] unit vectors -> [..., 35] monomials of degree ≤ 4 (order of ``_MONOMIALS``)."""
    comps = u.unbind(-1)
    out = [torch.ones_like(comps[0])]
    for lower, axis in _MONOMIAL_PLAN:
        out.append(out[lower] * comps[axis])
    return torch.stack(out, dim=-1)


# Normalisation constants of the real orthonormal spherical harmonics, l = 0..4, m = -l..l.
_SQPI = math.sqrt(math.pi)
_YLM_NORM = [
    0.5 / _SQPI,
    *[math.sqrt(3 / (4 * math.pi))] * 3,
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
]


def spherical_harmonics(u: torch.Tensor, l_max: int) -> torch.Tensor:
    """Real orthonormal Y_lm of unit vectors: [E, 3] -> [E, (l_max+1)²], order (l, m=-l..l).

    Written out explicitly; the model uses the equivalent ``monomials(u) @ monomial_to_ylm()``.
    """
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
    norm = torch.tensor(_YLM_NORM[: ylm.shape[1]], dtype=u.dtype, device=u.device)
    return ylm * norm


def monomial_to_ylm(l_max: int) -> torch.Tensor:
    """[35, L] matrix C with Y_lm(u) = monomials(u) @ C on the unit sphere (float64).

    Solved once by least squares on random unit vectors; each Y_lm is a polynomial of
    degree l ≤ 4, so the fit is exact to rounding (checked here).
    """
    gen = torch.Generator().manual_seed(1234)
    u = torch.randn(400, 3, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    mono, ylm = monomials(u), spherical_harmonics(u, l_max)
    c = torch.linalg.lstsq(mono, ylm, driver="gelsd").solution
    if (mono @ c - ylm).abs().max() > 1e-10:
        raise RuntimeError("monomial -> Y_lm fit is not exact; report this as a bug")
    return c


class Descriptor(nn.Module):
    """Φ¹ [N, n_r] and Φ² [N, n_a·(l_max+1)] of every atom from its neighbour vectors."""

    l_sum: torch.Tensor  # buffer (register_buffer in __init__)

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
        # c^{Z_i Z_j}_{nk}, radial: [T_j·K, T_i·n] so one matmul serves every centre species.
        self.mix_radial = nn.Parameter(
            torch.randn(t * basis_radial, t * n_radial, generator=generator)
            / math.sqrt(basis_radial)
        )
        # angular: [T_i, n, T_j·K], gathered per centre atom.
        self.mix_angular = nn.Parameter(
            torch.randn(t, n_angular, t * basis_angular, generator=generator)
            / math.sqrt(basis_angular)
        )
        # Plain attribute, not a buffer: kept in float64 and cast on use, so a model moved to
        # float32 and back to float64 still has the exact map.
        self._mono_to_ylm = monomial_to_ylm(l_max)  # [P, L] float64
        lsum = torch.zeros((l_max + 1) ** 2, l_max + 1)  # [L, l_max+1]: sums over m of each l
        for l in range(l_max + 1):
            lsum[l * l : (l + 1) * (l + 1), l] = 1.0
        self.register_buffer("l_sum", lsum, persistent=False)

    @property
    def n_features_radial(self) -> int:
        return self.n_radial

    @property
    def n_features_angular(self) -> int:
        return self.n_angular * (self.l_max + 1)

    def neighbour_sums(
        self, vec_r: torch.Tensor, vec_a: torch.Tensor, graph: Graph
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pure-torch per-atom sums: (Σ_{j∈s} f_k [N, T, K_r], Σ_{j∈s} f_k·mono_p [N, T, K_a, P]).

        ``fused.neighbour_sums`` computes the same two tensors in C++ on the CPU.
        """
        t, n = self.n_species, vec_r.shape[0]
        d_r = torch.linalg.vector_norm(vec_r, dim=-1)  # [N, R]
        f_r = RadialBasis.apply(d_r, self.cutoff_radial, self.basis_radial)  # [N, R, K_r]
        onehot_r = nn.functional.one_hot(graph.radial.species, t).to(f_r.dtype)  # [N, R, T]
        sums_r = torch.bmm(onehot_r.transpose(1, 2), f_r)  # [N, T, K_r]
        d_a = torch.linalg.vector_norm(vec_a, dim=-1)  # [N, Q]
        f_a = RadialBasis.apply(d_a, self.cutoff_angular, self.basis_angular)  # [N, Q, K_a]
        onehot_a = nn.functional.one_hot(graph.angular.species, t).to(f_a.dtype)  # [N, Q, T]
        x = (onehot_a.unsqueeze(-1) * f_a.unsqueeze(-2)).flatten(2)  # [N, Q, T·K_a]
        u = monomials(vec_a / d_a.unsqueeze(-1))  # [N, Q, P]
        sums_a = torch.bmm(x.transpose(1, 2), u)  # [N, T·K_a, P]
        return sums_r, sums_a.view(n, t, self.basis_angular, -1)

    def forward(
        self, vec_r: torch.Tensor, vec_a: torch.Tensor, graph: Graph, fused: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vec_r [N, R, 3], vec_a [N, Q, 3] -> (Φ¹ [N, n_r], Φ² [N, n_a·(l_max+1)]).

        ``fused=True`` computes the neighbour sums with the C++ kernels (CPU only).
        """
        t = self.n_species
        n = vec_r.shape[0]
        species = graph.species  # [N]
        if fused:
            from alcsp.potential import fused as _fused

            sums_r, sums_a = _fused.neighbour_sums(
                vec_r,
                vec_a,
                graph.radial.species,
                graph.angular.species,
                t,
                self.basis_radial,
                self.basis_angular,
                self.cutoff_radial,
                self.cutoff_angular,
            )
        else:
            sums_r, sums_a = self.neighbour_sums(vec_r, vec_a, graph)
        # Two-body: mix the per-neighbour-species sums per centre species.
        mixed = sums_r.reshape(n, -1) @ self.mix_radial  # [N, T·n_r]
        phi1 = (
            mixed.view(n, t, self.n_radial)
            .gather(1, species.view(-1, 1, 1).expand(-1, 1, self.n_radial))
            .squeeze(1)
        )  # [N, n_r]
        # Three-body: monomials -> Y_lm, mix per centre species, power spectrum.
        b = sums_a.reshape(n, t * self.basis_angular, -1)  # [N, T·K_a, P]
        b = b @ self._mono_to_ylm.to(dtype=b.dtype, device=b.device)  # [N, T·K_a, L]
        a = torch.bmm(self.mix_angular[species], b)  # [N, n_a, L]
        phi2 = (a * a) @ self.l_sum.to(a.dtype)  # [N, n_a, l_max+1]
        return phi1, phi2.reshape(n, -1)
