"""Periodic neighbour graphs for batches of structures (vesin), in a padded per-atom layout.

Shape letters: S structures, N atoms, R the largest number of radial neighbours (r < r_c^r)
of any atom in the batch, Q the same for angular neighbours (r < r_c^a), T model species.

vesin builds each structure's list (cell-list algorithm, small and skewed cells included);
one C++ pass (``_fused.cpp``: ``acnn_count_slots`` / ``acnn_fill_slots``, NumPy when the
kernels cannot be built) recomputes the pair vectors from the batch's positions and cell and
places them into slots — so a list built earlier with a skin serves later geometries too.
Every atom gets R radial and Q angular
slots; unused slots hold a dummy vector of length 1.5·r_c, where every basis function and its
derivative are exactly zero. With this layout the per-atom sums of the descriptor are
reductions and batched matmuls over the slot axis: no scatter or gather of per-edge rows,
which PyTorch's CPU index kernels handle at ~50–100 ns per row (measured), several times
the cost of the arithmetic on that row.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import vesin

from alcsp.structures import StructureBatch


@dataclass
class PairList:
    """One structure's neighbour pairs within the radial cutoff (local atom indices). Only
    the topology: ``build_graph`` computes r_j - r_i + shift·cell from the current geometry."""

    i: np.ndarray  # [E] int64 centre atom
    j: np.ndarray  # [E] int64 neighbour atom
    shift: np.ndarray  # [E, 3] int64 lattice translation of j


def pair_list(positions: np.ndarray, cell: np.ndarray, cutoff: float) -> PairList:
    """Full (i->j and j->i) periodic neighbour list of one structure within ``cutoff`` Å."""
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s = nl.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64),
        box=np.ascontiguousarray(cell, dtype=np.float64),
        periodic=True,
        quantities="ijS",
    )
    return PairList(i.astype(np.int64), j.astype(np.int64), s.astype(np.int64))


@dataclass
class Slots:
    """Neighbours of every atom in a padded [N, K] layout (K = R or Q)."""

    neighbour: torch.Tensor  # [N, K] long, global index of j (the centre itself when unused)
    shift: torch.Tensor  # [N, K, 3] float, lattice translation of j (zero when unused)
    vector: torch.Tensor  # [N, K, 3] float, r_ij in Å (dummy vector when unused)
    species: torch.Tensor  # [N, K] long, model species of j (0 when unused)
    used: torch.Tensor  # [N, K] bool


@dataclass
class Graph:
    """Padded radial and angular neighbour slots of a batch."""

    radial: Slots
    angular: Slots
    species: torch.Tensor  # [N] long, model species of each atom
    atom_structure: torch.Tensor  # [N] long


# neighbour, shift, vector, species, used (flat [N * K] or [N * K, 3]) and the width K
SlotArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


def _slots_numpy(
    centre: np.ndarray,
    neighbour: np.ndarray,
    shift: np.ndarray,
    vector: np.ndarray,
    cutoff: float,
    n_atoms: int,
    species: np.ndarray,
    dtype: npt.DTypeLike,
) -> SlotArrays:
    """Edges [E] shorter than ``cutoff`` into [N, K] slots, in input order per centre (the
    reference for the fused ``acnn_fill_slots``)."""
    inside = np.einsum("ec,ec->e", vector, vector) < cutoff * cutoff
    per_atom = np.bincount(centre[inside], minlength=n_atoms)
    width = max(int(per_atom.max()) if n_atoms else 0, 1)
    c = centre[inside]
    order = np.argsort(c, kind="stable")
    starts = np.concatenate([[0], np.cumsum(per_atom)[:-1]]).astype(np.int64)
    flat = c[order] * width + np.arange(len(c), dtype=np.int64) - starts[c[order]]
    size = n_atoms * width
    nb = np.repeat(np.arange(n_atoms, dtype=np.int64), width)
    nb[flat] = neighbour[inside][order]
    sh = np.zeros((size, 3), dtype=dtype)
    sh[flat] = shift[inside][order]
    vec = np.zeros((size, 3), dtype=dtype)
    vec[:, 0] = 1.5 * cutoff
    vec[flat] = vector[inside][order]
    used = np.zeros(size, dtype=bool)
    used[flat] = True
    sp = np.where(used, species[nb], 0)
    return nb, sh, vec, sp, used, width


def _slots_fused(
    pairs: list[PairList],
    ptr: np.ndarray,
    positions: np.ndarray,
    cells: np.ndarray,
    cutoffs: tuple[float, float],
    species: np.ndarray,
    dtype: npt.DTypeLike,
) -> tuple[SlotArrays, SlotArrays]:
    """Radial and angular slots of a batch in two C++ passes (count, fill) over the
    per-structure lists, vectors recomputed from ``positions`` [N, 3] and ``cells`` [S, 3, 3]."""
    from alcsp.potential import fused

    lib = fused.library()
    n_atoms, n_s = int(ptr[-1]), len(pairs)
    ptr = np.ascontiguousarray(ptr, dtype=np.int64)
    n_pairs = np.array([len(p.i) for p in pairs], dtype=np.int64)
    keep = [
        [np.ascontiguousarray(getattr(p, name), dtype=np.int64) for p in pairs]
        for name in ("i", "j", "shift")
    ]  # no copies for vesin's lists; referenced until the kernels return
    lists = [(ctypes.c_void_p * n_s)(*[a.ctypes.data for a in arrays]) for arrays in keep]
    common = [
        n_s,
        ptr.ctypes.data,
        n_pairs.ctypes.data,
        *lists,
        positions.ctypes.data,
        cells.ctypes.data,
        float(cutoffs[0]),
        float(cutoffs[1]),
    ]
    counts = np.empty((2, n_atoms), dtype=np.int64)
    lib.acnn_count_slots(*common, counts[0].ctypes.data, counts[1].ctypes.data)
    widths = [max(int(c.max()) if n_atoms else 0, 1) for c in counts]
    out: list[SlotArrays] = []
    for width in widths:
        size = n_atoms * width
        out.append(
            (
                np.empty(size, dtype=np.int64),
                np.empty((size, 3), dtype=dtype),
                np.empty((size, 3), dtype=dtype),
                np.empty(size, dtype=np.int64),
                np.empty(size, dtype=bool),
                width,
            )
        )
    fill = getattr(lib, "acnn_fill_slots_" + ("f32" if dtype == np.float32 else "f64"))
    fill(
        *common,
        widths[0],
        widths[1],
        1.5 * cutoffs[0],
        1.5 * cutoffs[1],
        species.ctypes.data,
        *(a.ctypes.data for a in out[0][:5]),
        *(a.ctypes.data for a in out[1][:5]),
    )
    return out[0], out[1]


def _to_slots(arrays: SlotArrays, n_atoms: int, device: torch.device) -> Slots:
    nb, sh, vec, sp, used, width = arrays
    shape = (n_atoms, width)
    return Slots(
        neighbour=torch.from_numpy(nb.reshape(shape)).to(device),
        shift=torch.from_numpy(sh.reshape(*shape, 3)).to(device),
        vector=torch.from_numpy(vec.reshape(*shape, 3)).to(device),
        species=torch.from_numpy(sp.reshape(shape)).to(device),
        used=torch.from_numpy(used.reshape(shape)).to(device),
    )


def build_graph(
    batch: StructureBatch,
    species: torch.Tensor,
    cutoff_radial: float,
    cutoff_angular: float,
    pairs: list[PairList] | None = None,
) -> Graph:
    """Build the graph of ``batch``; ``species`` [N] are model species indices (0..T-1).

    ``pairs`` may pass per-structure pair lists built earlier at ``cutoff_radial`` or more
    (training reuses them across epochs, the relaxer across steps): only their i, j and
    shifts are used, the vectors are recomputed from the batch's positions and cell.
    """
    ptr = batch.ptr.cpu().numpy()
    pos = np.ascontiguousarray(batch.positions.detach().cpu().double().numpy())  # [N, 3]
    cell = np.ascontiguousarray(batch.cell.detach().cpu().double().numpy())  # [S, 3, 3]
    if pairs is None:
        pairs = [
            pair_list(pos[ptr[s] : ptr[s + 1]], cell[s], cutoff_radial)
            for s in range(batch.n_structures)
        ]
    if len(pairs) != batch.n_structures:
        raise ValueError(f"{len(pairs)} pair lists for {batch.n_structures} structures")
    n_atoms = int(ptr[-1])
    sp = np.ascontiguousarray(species.cpu().numpy(), dtype=np.int64)
    dtype = np.float32 if batch.dtype == torch.float32 else np.float64
    from alcsp.potential import fused

    if fused.available():
        radial, angular = _slots_fused(
            pairs, ptr, pos, cell, (cutoff_radial, cutoff_angular), sp, dtype
        )
    else:  # the same slots in NumPy
        counts = np.array([len(p.i) for p in pairs], dtype=np.int64)
        offsets = np.repeat(ptr[:-1], counts)
        centre = np.concatenate([p.i for p in pairs]) + offsets
        neighbour = np.concatenate([p.j for p in pairs]) + offsets
        shift = np.concatenate([p.shift for p in pairs]).reshape(-1, 3)
        cell_of_pair = np.repeat(cell, counts, axis=0)  # [E, 3, 3]
        vector = pos[neighbour] - pos[centre] + np.einsum("ea,eab->eb", shift, cell_of_pair)
        rest = (n_atoms, sp, dtype)  # n_atoms, species, dtype
        radial = _slots_numpy(centre, neighbour, shift, vector, cutoff_radial, *rest)
        angular = _slots_numpy(centre, neighbour, shift, vector, cutoff_angular, *rest)
    return Graph(
        radial=_to_slots(radial, n_atoms, batch.device),
        angular=_to_slots(angular, n_atoms, batch.device),
        species=species,
        atom_structure=batch.batch,
    )


def slot_vectors(batch: StructureBatch, graph: Graph, slots: Slots) -> torch.Tensor:
    """[N, K, 3] r_ij recomputed from positions and cell, differentiable in both.

    Unused slots keep the graph's dummy vector.
    """
    cell = batch.cell[graph.atom_structure]  # [N, 3, 3]
    vec = (
        batch.positions[slots.neighbour]
        - batch.positions.unsqueeze(1)
        + torch.einsum("nka,nab->nkb", slots.shift, cell)
    )
    return torch.where(slots.used.unsqueeze(-1), vec, slots.vector)
