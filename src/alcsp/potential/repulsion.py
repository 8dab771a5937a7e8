"""A fixed short-range repulsive prior for ACNN: the ZBL screened-Coulomb pair energy, switched off.

Every radial function of the descriptor is finite at r = 0, so nothing in the network keeps
two atoms apart where the training set has no labels; in active learning that is where
relaxations collapse (H–H at 0.1–0.4 Å). This module adds, for each pair closer than r_out,

    E_ij = Z_i Z_j e²/(4πε₀ r) · φ(r/a) · S(r),     a = 0.8854 a₀ / (Z_i^0.23 + Z_j^0.23),
    φ(x) = 0.18175 e^{−3.19980x} + 0.50986 e^{−0.94229x} + 0.28022 e^{−0.40290x}
           + 0.02817 e^{−0.20162x}                   (Ziegler–Biersack–Littmark universal)
    S(r) = 1 − (10t³ − 15t⁴ + 6t⁵),   t = clip((r − r_in)/(r_out − r_in), 0, 1),

with r_in = inner·(R_i + R_j), r_out = outer·(R_i + R_j) and R the covalent radii of ASE
(Cordero et al. 2008). S is 1 below r_in and reaches 0 at r_out with zero first and second
derivatives, so energy, forces and force constants are continuous everywhere.

Defaults, inner = 0.35 and outer = 0.75 (of the covalent-radius sum R_i + R_j):

* outer = 0.75 leaves bonding untouched: H₂ is at 1.19× (0.74 Å), hydrides at 300 GPa have
  H–H ≈ 0.7–1.0 Å (≥ 1.13×), metals at 300 GPa sit at ~0.75–0.85×. The prior is exactly zero
  there; just inside r_out it is small (C² switch: Mg–Mg at 0.72× gets 0.007 eV, 0.26 eV/Å).
* At 0.5× (where the relaxer calls a structure unphysical, ``RelaxConfig.min_distance_fraction``)
  the switch is 0.5 and the pair energy is already large: H–H 11 eV (171 eV/Å), Mg–H 7 eV,
  Mg–Mg 7.6 eV, Ca–Ca 4.9 eV, O–O 64 eV; below r_in it is the bare ZBL, which diverges as 1/r.
* The switching region is wide (0.4 of the covalent sum). A narrow one puts a force spike of
  ~E(r)·1.9/(r_out − r_in) into the switch; with 0.40–0.75 the force of H–H, H–He and He–He
  already has a bump. With 0.35–0.75 the force −dE/dr is repulsive and its magnitude decreases
  monotonically with r, from r = 0 to r_out, for every pair Z_i, Z_j ≤ 94 (checked
  numerically; repulsive always holds, as φ/r decreases and S is non-increasing). The network is
  trained on E_DFT − E_prior, so a prior reaching a little into the bonding range is learned
  around; a force spike would not be.

Cost (docs/benchmarks.md, "short-range prior"): +1.5–4 µs/atom on a ~25–45 µs/atom model.
Only slots inside their pair's r_out carry work: about 2.5 per atom in random 300 GPa Mg–Ca–H
cells, fewer than 0.1 in Be–P–N–O ones, none in most relaxed structures. One pass over the
slot distances finds them (the angular slots: every r_out is below r_c^a, and they are half as
many as the radial ones), before any autograd graph is recorded; their energies and ∂E/∂v are
evaluated together inside one autograd node (``_ZBLPrior``, as ``RadialBasis`` does), since
PyTorch spends microseconds on each of the ~40 ops on a few hundred numbers. The backward
scatters the stored gradient or, when a graph of the gradient is asked for (force training,
force constants), re-evaluates it in differentiable ops, so second derivatives are exact too.
Padded slots (``used`` False) contribute exactly nothing; coincident atoms (r = 0) get the
energy at r = 1e-3 Å and a zero gradient, never NaN.

Shape letters: N atoms, K slots per atom (radial R or angular Q), T model species, P selected
close slots.
"""

from __future__ import annotations

import torch
from ase.data import atomic_numbers, covalent_radii
from torch import nn

from alcsp.potential.neighbours import Slots

BOHR = 0.529177210903  # a₀, Å (CODATA 2018)
COULOMB = 14.399645  # e²/(4πε₀), eV·Å
ZBL_SCREENING = 0.8854 * BOHR  # Å; a = ZBL_SCREENING / (Z_i^0.23 + Z_j^0.23)
ZBL_EXPONENT = 0.23
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_DECAYS = (3.19980, 0.94229, 0.40290, 0.20162)
R_FLOOR = 1e-3  # Å; distances below are evaluated here (coincident atoms stay finite)

#: Allowed values of ``ACNNConfig.repulsion``.
REPULSIONS = ("zbl", "none")

# Columns of ZBLRepulsion's pair table (one row per species pair Z_i·T + Z_j).
_R_OUT2, _HALF_COULOMB, _INV_SCREENING, _R_IN, _WIDTH = range(5)


def pair_terms(
    v: torch.Tensor, constants: torch.Tensor, neg_decays: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E [P], ∂E/∂v [P, 3]) of the switched ZBL energy E = h φ(r/a) S(t) / r of pair vectors
    v [P, 3] at r = max(|v|, R_FLOOR), t = clip((r − r_in)/(r_out − r_in), 0, 1).

    ``constants`` [P, 5] are the pair-table rows, ``neg_decays`` [4] = −d_k and ``weights``
    [4, 2] = (c_k, −c_k d_k), so ``exp(−d x) @ weights`` = (φ(x), φ'(x)). S and
    dS/dt = −30 t²(1 − t)² are zero-slope at both clipped ends; S is evaluated as
    (1 − t)³(1 + 3t + 6t²), without the cancellation of 1 − (10t³ − 15t⁴ + 6t⁵) near t = 1.
    Below R_FLOOR the gradient is zero.
    """
    half_coulomb, inv_screening = constants[:, _HALF_COULOMB], constants[:, _INV_SCREENING]
    r2 = (v * v).sum(1)  # [P]
    r = r2.clamp_min(R_FLOOR**2).sqrt()  # [P]
    inv_r = 1.0 / r
    phi_dphi = torch.exp(torch.outer(r * inv_screening, neg_decays)) @ weights  # [P, 2]
    phi, dphi_dx = phi_dphi[:, 0], phi_dphi[:, 1]
    width = constants[:, _WIDTH]  # r_out − r_in; divided by, so that t = 1 exactly at r_out
    t = ((r - constants[:, _R_IN]) / width).clamp(0.0, 1.0)  # [P]
    u = 1.0 - t
    tu = t * u
    s = u * u * u * ((6.0 * t + 3.0) * t + 1.0)  # [P]
    ds_dt = -30.0 * tu * tu  # [P]
    zbl = half_coulomb * phi * inv_r  # [P], unswitched
    # r·dE/dr = h (φ'(x)/a − φ/r) S + ZBL · r · (dS/dt) / (r_out − r_in)
    r_slope = half_coulomb * (dphi_dx * inv_screening - phi * inv_r) * s
    r_slope = r_slope + zbl * ds_dt * r / width
    slope = torch.where(r2 > R_FLOOR**2, r_slope * inv_r * inv_r, 0.0)  # [P], (dE/dr)/r
    return zbl * s, slope.unsqueeze(1) * v


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL repulsion [N] (eV) from one set of neighbour slots (vectors [N, K, 3]); half
    of each pair's energy goes to each atom (the slots hold both i→j and j→i).

    ACNN passes its angular slots (``ACNN.repulsion_energy``; ``ACNNConfig`` checks every r_out
    is below r_c^a); forces and stress follow from the gradient with respect to those vectors
    as for the three-body term. The pair table is derived from the species and fractions
    alone, so model files carry only the hyperparameters; like the descriptor's Y_lm map it is
    kept in float64 outside the state dict and cast on use (cached per dtype and device), so a
    model moved to float32 and back keeps it exact.
    """

    def __init__(self, species: tuple[str, ...], inner: float, outer: float):
        super().__init__()
        f64 = torch.float64
        z = torch.tensor([atomic_numbers[s] for s in species], dtype=f64)  # [T]
        radii = torch.tensor([covalent_radii[int(k)] for k in z], dtype=f64)  # [T]
        rsum = radii[:, None] + radii[None, :]  # [T, T]
        zpow = z**ZBL_EXPONENT  # [T]
        self.n_species = len(z)
        self.r_in = inner * rsum  # [T, T] Å
        self.r_out = outer * rsum  # [T, T] Å
        columns = {
            _R_OUT2: self.r_out**2,  # Å²
            _HALF_COULOMB: 0.5 * COULOMB * z[:, None] * z[None, :],  # eV·Å, half per slot
            _INV_SCREENING: (zpow[:, None] + zpow[None, :]) / ZBL_SCREENING,  # 1/a, 1/Å
            _R_IN: self.r_in,  # Å
            _WIDTH: self.r_out - self.r_in,  # Å
        }
        table = torch.stack([columns[k].flatten() for k in range(5)], dim=1)  # [T·T, 5]
        c = torch.tensor(ZBL_COEFFICIENTS, dtype=f64)  # [4]
        d = torch.tensor(ZBL_DECAYS, dtype=f64)  # [4]
        weights = torch.stack([c, -c * d], dim=1)  # [4, 2]
        # [T] Å², the largest r_out² of any pair with that centre species: the first cut
        centre_outer2 = self.r_out.amax(dim=1) ** 2
        self._float64 = (table, -d, weights, centre_outer2)
        self._cast: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def constants(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(pair table [T·T, 5], −decays [4], weights [4, 2], centre r_out² [T]) in the dtype
        and on the device of ``like``."""
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = tuple(
                a.to(dtype=like.dtype, device=like.device) for a in self._float64
            )
        return self._cast[key]

    def pair_energy(
        self, r: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor
    ) -> torch.Tensor:
        """Switched ZBL energy [P] of pairs at distances r [P] (Å) of species indices [P], [P];
        plain differentiable ops (any order of derivative)."""
        table, neg_decays, weights, _ = self.constants(r)
        v = nn.functional.pad(r.unsqueeze(1), (0, 2))  # [P, 3] = (r, 0, 0)
        rows = table.index_select(0, centre * self.n_species + neighbour)  # [P, 5]
        return 2.0 * pair_terms(v, rows, neg_decays, weights)[0]

    def forward(self, vectors: torch.Tensor, slots: Slots, species: torch.Tensor) -> torch.Tensor:
        """Slot vectors [N, K, 3] of ``slots`` (radial or angular) and centre species [N] ->
        per-atom energies [N] eV."""
        with torch.no_grad():
            idx, pair = self._close_slots(vectors, slots, species)
        if idx.numel() == 0:  # nothing close: no autograd node at all
            return vectors.new_zeros(vectors.shape[0])
        return _ZBLPrior.apply(vectors, idx, pair, self)

    def _close_slots(
        self, vectors: torch.Tensor, slots: Slots, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat slot indices [P], pair-table rows [P]) of the used slots inside their r_out."""
        n, width = vectors.shape[:2]
        table, _, _, centre_outer2 = self.constants(vectors)
        x, y, z = vectors.reshape(-1, 3).unbind(1)
        d2 = x * x  # [N·K], one pass over the vectors
        d2.addcmul_(y, y).addcmul_(z, z)
        # first cut: the largest r_out of the centre's species; padded slots sit at 1.5 r_c,
        # beyond every r_out, and are dropped by the used test below
        near = d2.view(n, width) < centre_outer2.index_select(0, species).unsqueeze(1)
        idx = near.view(-1).nonzero().squeeze(1)  # [C], a few per atom, often none
        pair = torch.add(
            slots.species.reshape(-1).index_select(0, idx),
            species.index_select(0, idx // width),
            alpha=self.n_species,
        )  # [C], Z_i·T + Z_j
        # second cut: each pair's own r_out, used slots only
        keep = d2.index_select(0, idx) < table[:, _R_OUT2].index_select(0, pair)
        keep = (keep & slots.used.reshape(-1).index_select(0, idx)).nonzero().squeeze(1)
        return idx.index_select(0, keep), pair.index_select(0, keep)


class _ZBLPrior(torch.autograd.Function):
    """Per-atom energies [N] of the close slots ``idx`` [P] of ``vectors`` [N, K, 3], with
    ∂E/∂v computed in the same pass: one autograd node instead of ~40 small ones."""

    @staticmethod
    def forward(ctx, vectors, idx, pair, module: ZBLRepulsion):
        n, width = vectors.shape[:2]
        table, neg_decays, weights, _ = module.constants(vectors)
        v = vectors.reshape(-1, 3).index_select(0, idx)  # [P, 3]
        e, grad_v = pair_terms(v, table.index_select(0, pair), neg_decays, weights)
        atom = idx // width  # [P]
        ctx.module = module
        ctx.save_for_backward(vectors, idx, pair, atom, grad_v)
        return vectors.new_zeros(n).index_add_(0, atom, e)  # [N]

    @staticmethod
    def backward(ctx, grad_atoms: torch.Tensor):
        vectors, idx, pair, atom, grad_v = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: ∂E/∂v differentiable in the vectors
            table, neg_decays, weights, _ = ctx.module.constants(vectors)
            v = vectors.reshape(-1, 3).index_select(0, idx)  # [P, 3]
            grad_v = pair_terms(v, table.index_select(0, pair), neg_decays, weights)[1]
        g = grad_atoms.index_select(0, atom).unsqueeze(1) * grad_v  # [P, 3]
        grad = vectors.new_zeros(vectors.shape).view(-1, 3).index_add(0, idx, g)  # [N·K, 3]
        return grad.view_as(vectors), None, None, None
