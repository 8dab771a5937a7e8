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

Cost (docs/benchmarks.md, "short-range prior"). Only slots inside their pair's r_out carry
work: about 2.5 per atom in random 300 GPa Mg–Ca–H cells, fewer than 0.1 in Be–P–N–O ones,
none in most relaxed structures. One pass over the slot distances finds them (the angular
slots: every r_out is below r_c^a, and they are half as many as the radial ones); their
energies and ∂E/∂v are evaluated together inside one autograd node (``_ZBLPrior``), in NumPy
(float64) for CPU tensors, where PyTorch would spend ~2.5 µs on each of ~40 ops on a few
hundred numbers, and in torch ops on other devices. The backward scatters the stored gradient
or, when a graph of the gradient is asked for (force training, force constants), re-evaluates
it in differentiable torch ops, so second derivatives are exact too. Padded slots (``used``
False) contribute exactly nothing; coincident atoms (r = 0) get the energy at r = 1e-3 Å and a
zero gradient, never NaN.

Shape letters: N atoms, K slots per atom (radial R or angular Q), T model species, P selected
close slots.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
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

Array = np.ndarray | torch.Tensor  # pair_terms runs on either

# Columns of ZBLRepulsion's pair table (one row per species pair Z_i·T + Z_j).
_R_OUT2, _HALF_COULOMB, _INV_SCREENING, _R_IN, _WIDTH = range(5)


def pair_terms(
    xp: ModuleType, v: Array, constants: Array, neg_decays: Array, weights: Array
) -> tuple[Array, Array]:
    """(E [P], ∂E/∂v [P, 3]) of the switched ZBL energy E = h φ(r/a) S(t) / r of pair vectors
    v [P, 3] at r = max(|v|, R_FLOOR), t = clip((r − r_in)/(r_out − r_in), 0, 1).

    ``xp`` is ``numpy`` or ``torch`` (the same arithmetic on either kind of array);
    ``constants`` [P, 5] are the pair-table rows, ``neg_decays`` [4] = −d_k and ``weights``
    [4, 2] = (c_k, −c_k d_k), so ``exp(−d x) @ weights`` = (φ(x), φ'(x)). S and
    dS/dt = −30 t²(1 − t)² are zero-slope at both clipped ends; S is evaluated as
    (1 − t)³(1 + 3t + 6t²), without the cancellation of 1 − (10t³ − 15t⁴ + 6t⁵) near t = 1.
    Below R_FLOOR the gradient is zero.
    """
    half_coulomb, inv_screening = constants[:, _HALF_COULOMB], constants[:, _INV_SCREENING]
    r2 = (v * v).sum(1)  # [P]
    r = xp.sqrt(r2.clip(R_FLOOR**2))  # [P]
    inv_r = 1.0 / r
    phi_dphi = xp.exp(xp.outer(r * inv_screening, neg_decays)) @ weights  # [P, 2]
    phi, dphi_dx = phi_dphi[:, 0], phi_dphi[:, 1]
    width = constants[:, _WIDTH]  # r_out − r_in; divided by, so that t = 1 exactly at r_out
    t = ((r - constants[:, _R_IN]) / width).clip(0.0, 1.0)  # [P]
    u = 1.0 - t
    tu = t * u
    s = u * u * u * ((6.0 * t + 3.0) * t + 1.0)  # [P]
    ds_dt = -30.0 * tu * tu  # [P]
    zbl = half_coulomb * phi * inv_r  # [P], unswitched
    # r·dE/dr = h (φ'(x)/a − φ/r) S + ZBL · r · (dS/dt) / (r_out − r_in)
    r_slope = half_coulomb * (dphi_dx * inv_screening - phi * inv_r) * s
    r_slope = r_slope + zbl * ds_dt * r / width
    slope = xp.where(r2 > R_FLOOR**2, r_slope * inv_r * inv_r, 0.0)  # [P], (dE/dr)/r
    return zbl * s, slope[:, None] * v


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL repulsion [N] (eV) from one set of neighbour slots (vectors [N, K, 3]); half
    of each pair's energy goes to each atom (the slots hold both i→j and j→i).

    ACNN passes its angular slots (``ACNN.repulsion_energy``; ``ACNNConfig`` checks every r_out
    is below r_c^a); forces and stress follow from the gradient with respect to those vectors
    as for the three-body term. The pair table is derived from the species and fractions
    alone, so model files carry only the hyperparameters; like the descriptor's Y_lm map it is
    kept in float64 outside the state dict (a model moved to float32 and back keeps it exact).
    """

    def __init__(self, species: tuple[str, ...], inner: float, outer: float):
        super().__init__()
        z = np.array([atomic_numbers[s] for s in species], dtype=np.float64)  # [T]
        radii = np.array([covalent_radii[int(k)] for k in z])  # [T]
        rsum = radii[:, None] + radii[None, :]  # [T, T]
        zpow = z**ZBL_EXPONENT  # [T]
        self.n_species = len(z)
        self.r_in = torch.from_numpy(inner * rsum)  # [T, T] Å, float64
        self.r_out = torch.from_numpy(outer * rsum)  # [T, T] Å, float64
        columns = {
            _R_OUT2: (outer * rsum) ** 2,  # Å²
            _HALF_COULOMB: 0.5 * COULOMB * z[:, None] * z[None, :],  # eV·Å, half per slot
            _INV_SCREENING: (zpow[:, None] + zpow[None, :]) / ZBL_SCREENING,  # 1/a, 1/Å
            _R_IN: inner * rsum,  # Å
            _WIDTH: outer * rsum - inner * rsum,  # r_out − r_in, Å
        }
        self._table = np.stack([columns[k].ravel() for k in range(5)], axis=1)  # [T·T, 5]
        c, d = np.array(ZBL_COEFFICIENTS), np.array(ZBL_DECAYS)
        self._neg_decays = -d  # [4]
        self._weights = np.stack([c, -c * d], axis=1)  # [4, 2]
        # [T] Å², the largest r_out² of any pair with that centre species: the first cut
        self._centre_outer2 = ((outer * rsum).max(axis=1)) ** 2
        self._torch: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}
        self._ones3 = {"f": np.ones(3, np.float32), "d": np.ones(3, np.float64)}  # for d2
        #: CPU tensors take the NumPy path (False: torch ops everywhere, as on other devices)
        self.numpy_on_cpu = True

    def _numpy(self, x: torch.Tensor) -> bool:
        return self.numpy_on_cpu and x.device.type == "cpu"

    def _constants_torch(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(table [T·T, 5], −decays [4], weights [4, 2], centre r_out² [T]) as tensors like
        ``like`` (cached per dtype and device)."""
        key = (like.dtype, like.device)
        if key not in self._torch:
            arrays = (self._table, self._neg_decays, self._weights, self._centre_outer2)
            self._torch[key] = tuple(
                torch.from_numpy(a).to(dtype=like.dtype, device=like.device) for a in arrays
            )
        return self._torch[key]

    def pair_energy(
        self, r: torch.Tensor, centre: torch.Tensor, neighbour: torch.Tensor
    ) -> torch.Tensor:
        """Switched ZBL energy [P] of pairs at distances r [P] (Å) of species indices [P], [P];
        torch ops throughout (differentiable to any order)."""
        table, neg_decays, weights, _ = self._constants_torch(r)
        v = nn.functional.pad(r.unsqueeze(1), (0, 2))  # [P, 3] = (r, 0, 0)
        constants = table.index_select(0, centre * self.n_species + neighbour)  # [P, 5]
        return 2.0 * pair_terms(torch, v, constants, neg_decays, weights)[0]

    def forward(self, vectors: torch.Tensor, slots: Slots, species: torch.Tensor) -> torch.Tensor:
        """Slot vectors [N, K, 3] of ``slots`` (radial or angular) and centre species [N] ->
        per-atom energies [N] eV."""
        with torch.no_grad():
            if self._numpy(vectors):
                idx, pair = self._select_numpy(vectors, slots, species)
            else:
                idx, pair = self._select_torch(vectors, slots, species)
        if idx.numel() == 0:  # nothing close: no autograd node at all
            return vectors.new_zeros(vectors.shape[0])
        return _ZBLPrior.apply(vectors, idx, pair, self)

    def _select_numpy(
        self, vectors: torch.Tensor, slots: Slots, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat slot indices [P], pair rows [P]) of the used slots inside their r_out."""
        n, width = vectors.shape[:2]
        flat = vectors.detach().reshape(-1, 3).numpy()  # [N·K, 3], no copy
        sp = species.numpy()  # [N]
        d2 = (flat * flat) @ self._ones3[flat.dtype.char]  # [N·K]; BLAS, ~2× np.einsum
        # first cut: the largest r_out of the centre's species; padded slots sit at 1.5 r_c,
        # beyond every r_out, and are dropped by the used test below
        near = d2.reshape(n, width) < self._centre_outer2[sp][:, None]  # [N, K]
        idx = np.flatnonzero(near)  # [C], a few per atom, often none
        pair = sp[idx // width] * self.n_species + slots.species.numpy().reshape(-1)[idx]
        # second cut: each pair's own r_out, used slots only
        keep = (d2[idx] < self._table[pair, _R_OUT2]) & slots.used.numpy().reshape(-1)[idx]
        return torch.from_numpy(idx[keep]), torch.from_numpy(pair[keep])

    def _select_torch(
        self, vectors: torch.Tensor, slots: Slots, species: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same in torch ops (any device)."""
        n, width = vectors.shape[:2]
        table, _, _, centre_outer2 = self._constants_torch(vectors)
        flat = vectors.reshape(-1, 3)  # [N·K, 3]
        d2 = (flat * flat).sum(1)  # [N·K]
        near = d2.view(n, width) < centre_outer2.index_select(0, species).unsqueeze(1)
        idx = near.view(-1).nonzero().squeeze(1)  # [C]
        pair = torch.add(
            slots.species.reshape(-1).index_select(0, idx),
            species.index_select(0, idx // width),
            alpha=self.n_species,
        )  # [C]
        keep = d2.index_select(0, idx) < table[:, _R_OUT2].index_select(0, pair)
        keep = (keep & slots.used.reshape(-1).index_select(0, idx)).nonzero().squeeze(1)
        return idx.index_select(0, keep), pair.index_select(0, keep)

    def _terms(
        self, vectors: torch.Tensor, idx: torch.Tensor, pair: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E [P], ∂E/∂v [P, 3]) of the selected slots, in the dtype of ``vectors``: NumPy in
        float64 for CPU tensors, torch ops in the tensor's dtype elsewhere."""
        if self._numpy(vectors):
            v = vectors.detach().reshape(-1, 3).numpy()[idx.numpy()].astype(np.float64)
            constants = self._table[pair.numpy()]  # [P, 5]
            e, grad = pair_terms(np, v, constants, self._neg_decays, self._weights)
            return torch.from_numpy(e).to(vectors.dtype), torch.from_numpy(grad).to(vectors.dtype)
        table, neg_decays, weights, _ = self._constants_torch(vectors)
        v = vectors.detach().reshape(-1, 3).index_select(0, idx)
        return pair_terms(torch, v, table.index_select(0, pair), neg_decays, weights)


class _ZBLPrior(torch.autograd.Function):
    """Per-atom energies [N] of the selected close slots ``idx`` [P] of ``vectors`` [N, K, 3],
    with ∂E/∂v computed in the same pass (as ``RadialBasis`` does). One autograd node instead
    of ~40 small ops: PyTorch's per-op overhead, not arithmetic, is the cost at this size."""

    @staticmethod
    def forward(ctx, vectors, idx, pair, module: ZBLRepulsion):
        n, width = vectors.shape[:2]
        e, grad_v = module._terms(vectors, idx, pair)  # [P], [P, 3]
        atom = idx // width  # [P]
        ctx.module = module
        ctx.save_for_backward(vectors, idx, pair, atom, grad_v)
        return vectors.new_zeros(n).index_add_(0, atom, e)  # [N]

    @staticmethod
    def backward(ctx, grad_atoms: torch.Tensor):
        vectors, idx, pair, atom, grad_v = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: ∂E/∂v differentiable in the vectors
            table, neg_decays, weights, _ = ctx.module._constants_torch(vectors)
            v = vectors.reshape(-1, 3).index_select(0, idx)  # [P, 3]
            grad_v = pair_terms(torch, v, table.index_select(0, pair), neg_decays, weights)[1]
        g = grad_atoms.index_select(0, atom).unsqueeze(1) * grad_v  # [P, 3]
        grad = vectors.new_zeros(vectors.shape).view(-1, 3).index_add(0, idx, g)  # [N·K, 3]
        return grad.view_as(vectors), None, None, None
