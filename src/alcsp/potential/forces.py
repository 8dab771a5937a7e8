"""Energies, forces and stresses of a batch from one autograd pass (eq. 2).

The gradient is taken with respect to the neighbour vectors r_ij only: forces follow by
summing ∂E/∂r_ij onto both atoms of each pair, and the strain derivative is
Σ_ij ∂E/∂r_ij ⊗ r_ij per structure (r_ij -> (1+ε) r_ij under a homogeneous strain ε). This
is the same number as differentiating through a symmetrically strained cell and positions,
at a fraction of the cost of a second autograd pass (model speed: docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from alcsp.potential.model import ACNN
from alcsp.potential.neighbours import Graph, PairList, build_graph, pair_list, slot_vectors
from alcsp.structures import PotentialOutput, StructureBatch


def graph_for(
    model: ACNN,
    batch: StructureBatch,
    pairs: list[PairList] | None = None,
    skin: float = 0.0,
) -> Graph:
    """The neighbour graph of ``batch`` at the model's cutoffs plus ``skin`` Å.

    A graph with a skin stays valid while no atom has moved more than skin/2 (and the cell has
    barely changed); pass it with ``refresh_vectors=True`` to ``energy_forces_stress`` to
    reuse it over several relaxation steps. Slots beyond the cutoffs contribute exactly zero.
    """
    if not 0.0 <= skin <= model.config.cutoff_angular / 3:
        raise ValueError(f"skin must be in [0, cutoff_angular/3], got {skin} Å")
    species = model.species_index(batch.numbers)
    return build_graph(
        batch,
        species,
        model.config.cutoff_radial + skin,
        model.config.cutoff_angular + skin,
        pairs=pairs,
    )


def resolve_backend(backend: str, device: torch.device) -> bool:
    """True when the fused C++ kernels should be used for ``backend`` on ``device``."""
    if backend not in ("auto", "fused", "torch"):
        raise ValueError(f"backend must be 'auto', 'fused' or 'torch', got {backend!r}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return False
    from alcsp.potential import fused

    if backend == "fused":
        fused.library()  # raises FusedUnavailable with the reason
        return True
    reason = fused.unavailable_reason()
    if reason is not None:
        warnings.warn(
            f"ACNN fused CPU kernels unavailable, using the slower pure-PyTorch path: {reason}",
            RuntimeWarning,
            stacklevel=3,
        )
    return reason is None


def _scatter_pair_gradients(
    de_dr: torch.Tensor, neighbour: torch.Tensor, vectors: torch.Tensor, n_atoms: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """de_dr, vectors [N, K, 3] -> (forces [N, 3], per-atom strain derivative [N, 3, 3])."""
    # r_ij = r_j - r_i: ∂E/∂r_i = -Σ_k ∂E/∂r_ik (centre) + Σ over pairs where i is the neighbour.
    forces = de_dr.sum(dim=1).index_add(0, neighbour.reshape(-1), -de_dr.reshape(-1, 3))
    per_atom = torch.bmm(de_dr.transpose(1, 2), vectors)  # [N, 3, 3]: Σ_k ∂E/∂r ⊗ r
    return forces, per_atom


def energy_forces_stress(
    model: ACNN,
    batch: StructureBatch,
    graph: Graph | None = None,
    training: bool = False,
    backend: str = "auto",
    refresh_vectors: bool = False,
) -> PotentialOutput:
    """Energy [S] eV, forces [N, 3] eV/Å, stress [S, 3, 3] eV/Å³ (ASE sign) of ``batch``.

    With ``training=True`` the outputs keep their autograd graph so a loss on forces and
    stress back-propagates to the parameters. ``backend``: "fused" (C++ neighbour sums, CPU),
    "torch" (pure PyTorch, any device) or "auto" (fused on the CPU, torch elsewhere).
    ``refresh_vectors=True`` recomputes the neighbour vectors from the batch's positions and
    cell (a graph built earlier, with a skin, for a nearby geometry).
    """
    fused = resolve_backend(backend, batch.device)
    if graph is None:
        graph = graph_for(model, batch)
    n_atoms = batch.positions.shape[0]
    if refresh_vectors:
        with torch.no_grad():
            vec_r = slot_vectors(batch, graph, graph.radial)
            vec_a = slot_vectors(batch, graph, graph.angular)
    else:
        vec_r, vec_a = graph.radial.vector, graph.angular.vector
    vec_r = vec_r.detach().requires_grad_(True)  # [N, R, 3]
    vec_a = vec_a.detach().requires_grad_(True)  # [N, Q, 3]
    with torch.enable_grad():
        atomic = model(vec_r, vec_a, graph, fused)  # [N]
        energy = atomic.new_zeros(batch.n_structures).index_add(0, graph.atom_structure, atomic)
        g_r, g_a = torch.autograd.grad(energy.sum(), (vec_r, vec_a), create_graph=training)
    f_r, w_r = _scatter_pair_gradients(g_r, graph.radial.neighbour, vec_r.detach(), n_atoms)
    f_a, w_a = _scatter_pair_gradients(g_a, graph.angular.neighbour, vec_a.detach(), n_atoms)
    forces = f_r + f_a  # [N, 3]
    de_deps = (
        (w_r + w_a)
        .new_zeros(batch.n_structures, 3, 3)
        .index_add(0, graph.atom_structure, w_r + w_a)
    )  # [S, 3, 3]
    de_deps = 0.5 * (de_deps + de_deps.transpose(1, 2))
    stress = de_deps / batch.volume().view(-1, 1, 1)
    if not training:
        energy, forces, stress = energy.detach(), forces.detach(), stress.detach()
    return PotentialOutput(energy=energy, forces=forces, stress=stress)


@dataclass(frozen=True)
class _CachedPairs:
    """A pair list built at r_c^r + skin and the geometry it was built at."""

    pairs: PairList  # vesin's list at the reference geometry
    positions: np.ndarray  # [A, 3] Å, reference positions
    cell: np.ndarray  # [3, 3] Å, reference cell (rows)
    cell_inv: np.ndarray  # [3, 3], its inverse


def pair_list_valid(
    ref_positions: np.ndarray,
    ref_cell_inv: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    cutoff: float,
    skin: float,
) -> bool:
    """Whether a list built at ``cutoff + skin`` Å for the reference geometry still holds
    every pair closer than ``cutoff`` at (``positions`` [A, 3], ``cell`` [3, 3]).

    Bound: write the cell change as H = H0 M (rows are lattice vectors, M = H0⁻¹ H) and each
    atom's move as the affine part plus a rest, r_i = r_i⁰ M + u_i. A periodic pair
    (i, j, n) then has d = d⁰ M + (u_j − u_i) with d⁰ = r_j⁰ − r_i⁰ + n H0, so
    |d⁰| ≤ ‖M⁻¹‖₂ (|d| + 2 max_i |u_i|). Every pair with |d| < r_c is therefore in the list
    (|d⁰| < r_c + skin) when ‖M⁻¹‖₂ (r_c + 2 max|u|) ≤ r_c + skin. Without a cell change this
    is the familiar max|u| ≤ skin/2; a strain ε costs about r_c·|ε| of the skin. Only the
    non-affine part u counts: atoms carried along by the cell (as in the relaxer's Frechet
    coordinates) use none of the skin.
    """
    m = ref_cell_inv @ cell  # [3, 3]
    u = positions - ref_positions @ m  # [A, 3]
    u_max = float(np.sqrt(np.einsum("ac,ac->a", u, u).max())) if len(u) else 0.0
    sigma_min = float(np.linalg.svd(m, compute_uv=False)[-1])  # 1 / ‖M⁻¹‖₂
    if not sigma_min > 0.0:
        return False
    # the (1 - 1e-9) keeps rounding in this test from ever admitting a boundary pair
    return (cutoff + 2.0 * u_max) <= sigma_min * (cutoff + skin) * (1.0 - 1e-9)


class ACNNPotential:
    """An ACNN model as a ``BatchedPotential``: whole batches in one call, on its device.

    Neighbour-list reuse: when a batch carries ``ids`` (the relaxer sets them), each
    structure's vesin pair list is built at r_c^r + ``skin`` Å and kept with the geometry it
    was built at; later calls with the same id reuse it while ``pair_list_valid`` proves it
    still holds every pair within r_c^r, recomputing the pair vectors from the current
    positions and cell (the padding drops pairs beyond the cutoffs, so results equal a fresh
    build to rounding). Otherwise the list is rebuilt. Entries whose id is absent from a call
    are dropped, so the cache never holds more than one batch. ``skin=0`` or no ids: a fresh
    list every call. ``pair_lists_built`` / ``pair_lists_reused`` count the two cases.
    """

    def __init__(
        self,
        model: ACNN,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        skin: float = 0.5,
    ):
        first = next(model.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = dtype if dtype is not None else first.dtype
        # A private frozen copy: the caller's model keeps its device, dtype and grad flags.
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        self.model.requires_grad_(False)
        self.backend = backend
        resolve_backend(backend, self.device)  # fail now, not in the middle of a run
        if not (math.isfinite(skin) and 0.0 <= skin <= self.model.config.cutoff_radial):
            raise ValueError(
                f"skin must be between 0 and cutoff_radial "
                f"({self.model.config.cutoff_radial} Å), got {skin} Å; 0.3-1.0 Å is typical."
            )
        self.skin = float(skin)
        self._cache: dict[int, _CachedPairs] = {}
        self.pair_lists_built = 0
        self.pair_lists_reused = 0

    @property
    def cached_ids(self) -> list[int]:
        """Ids whose pair lists are kept (those of the last call with ids), sorted."""
        return sorted(self._cache)

    def compute(self, batch: StructureBatch) -> PotentialOutput:
        batch = batch.to(device=self.device, dtype=self.dtype)
        if batch.ids is None or self.skin == 0.0:
            return energy_forces_stress(self.model, batch, backend=self.backend)
        graph = graph_for(self.model, batch, pairs=self._pairs(batch))
        return energy_forces_stress(self.model, batch, graph=graph, backend=self.backend)

    def _pairs(self, batch: StructureBatch) -> list[PairList]:
        """Per-structure pair lists at r_c^r + skin for ``batch`` (reused or rebuilt)."""
        assert batch.ids is not None
        ids = batch.ids.cpu().numpy()
        if ids.shape != (batch.n_structures,):
            raise ValueError(
                f"batch.ids must have one id per structure ({batch.n_structures}), "
                f"got shape {tuple(ids.shape)}."
            )
        if len(np.unique(ids)) != len(ids):
            raise ValueError("batch.ids must be unique within a batch (one id per structure).")
        pos = batch.positions.detach().cpu().double().numpy()  # [N, 3]
        cell = batch.cell.detach().cpu().double().numpy()  # [S, 3, 3]
        ptr = batch.ptr.cpu().numpy()
        cutoff = self.model.config.cutoff_radial
        cache: dict[int, _CachedPairs] = {}
        out = []
        for s, key in enumerate(ids.tolist()):
            p, h = pos[ptr[s] : ptr[s + 1]], cell[s]
            entry = self._cache.get(key)
            if (
                entry is not None
                and len(entry.positions) == len(p)
                and pair_list_valid(entry.positions, entry.cell_inv, p, h, cutoff, self.skin)
            ):
                out.append(entry.pairs)  # build_graph recomputes the vectors
                self.pair_lists_reused += 1
            else:
                pl = pair_list(p, h, cutoff + self.skin)
                inv = np.linalg.inv(h)
                entry = _CachedPairs(pl, p.copy(), h.copy(), inv)
                out.append(pl)
                self.pair_lists_built += 1
            cache[key] = entry
        self._cache = cache  # ids absent from this call are dropped
        return out
