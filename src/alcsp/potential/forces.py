"""Energies, forces and stresses of a batch from one autograd pass (eq. 2).

The gradient is taken with respect to the neighbour vectors r_ij only: forces follow by
summing ∂E/∂r_ij onto both atoms of each pair, and the strain derivative is
Σ_ij ∂E/∂r_ij ⊗ r_ij per structure (r_ij -> (1+ε) r_ij under a homogeneous strain ε). This
is the same number as differentiating through a symmetrically strained cell and positions,
at a fraction of the cost (DESIGN.md: ~1 µs/atom against ~45 µs/atom in eager mode).
"""

from __future__ import annotations

import copy
import warnings

import torch

from alcsp.potential.model import ACNN
from alcsp.potential.neighbours import Graph, PairList, build_graph, slot_vectors
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


class ACNNPotential:
    """An ACNN model as a ``BatchedPotential``: whole batches in one call, on its device."""

    def __init__(
        self,
        model: ACNN,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ):
        first = next(model.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = dtype if dtype is not None else first.dtype
        # A private frozen copy: the caller's model keeps its device, dtype and grad flags.
        self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
        self.model.requires_grad_(False)
        self.backend = backend
        resolve_backend(backend, self.device)  # fail now, not in the middle of a run

    def compute(self, batch: StructureBatch) -> PotentialOutput:
        batch = batch.to(device=self.device, dtype=self.dtype)
        return energy_forces_stress(self.model, batch, backend=self.backend)
