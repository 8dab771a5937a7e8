"""Periodic neighbour graphs for batches of structures (vesin), laid out for the ACNN descriptor.

Shape letters: S structures, N atoms, E radial edges (r < r_c^r), A angular edges
(r < r_c^a, a subset of the radial ones), T species of the model, M the largest number of
angular neighbours of any atom in the batch.

vesin builds each structure's list (cell-list algorithm, small and skewed cells included);
everything after that is vectorised NumPy over the whole batch. The angular edges are
ordered by (centre species, neighbour species) so the species-pair mixing of the radial
basis is a handful of dense matmuls instead of a per-edge gather of coefficient matrices,
and each angular edge carries its slot in a padded [N, M] layout so the three-body sums
become one batched matmul (see ``descriptors.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import vesin

from alcsp.structures import StructureBatch


@dataclass
class PairList:
    """One structure's neighbour pairs within the radial cutoff (local atom indices)."""

    i: np.ndarray  # [E] int64 centre atom
    j: np.ndarray  # [E] int64 neighbour atom
    shift: np.ndarray  # [E, 3] int64 lattice translation of j
    distance: np.ndarray  # [E] float64 Å


def pair_list(positions: np.ndarray, cell: np.ndarray, cutoff: float) -> PairList:
    """Full (i->j and j->i) periodic neighbour list of one structure within ``cutoff`` Å."""
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, d = nl.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64),
        box=np.ascontiguousarray(cell, dtype=np.float64),
        periodic=True,
        quantities="ijSd",
    )
    return PairList(i.astype(np.int64), j.astype(np.int64), s.astype(np.int64), d)


@dataclass
class Graph:
    """Neighbour graph of a batch, with the index arrays the ACNN descriptor needs."""

    centre: torch.Tensor  # [E] long, global index of atom i
    neighbour: torch.Tensor  # [E] long, global index of atom j
    shift: torch.Tensor  # [E, 3] float, lattice translation (integer-valued) of j
    edge_structure: torch.Tensor  # [E] long, structure of each edge
    radial_index: torch.Tensor  # [E] long, centre*T + species(j): slot of the radial sum
    angular_edges: torch.Tensor  # [A] long, radial-edge index of each angular edge (pair-sorted)
    angular_slot: torch.Tensor  # [A] long, centre*M + rank among the centre's angular edges
    pair_counts: list[int]  # [T*T] angular edges per (species i, species j) block, in order
    max_angular: int  # M
    species: torch.Tensor  # [N] long, model species index of each atom


def build_graph(
    batch: StructureBatch,
    species: torch.Tensor,
    n_species: int,
    cutoff_radial: float,
    cutoff_angular: float,
    pairs: list[PairList] | None = None,
) -> Graph:
    """Build the graph of ``batch``. ``species`` [N] are model species indices (0..T-1).

    ``pairs`` may pass precomputed per-structure pair lists (training reuses them); they
    must have been built with ``cutoff_radial``.
    """
    ptr = batch.ptr.cpu().numpy()
    if pairs is None:
        pos = batch.positions.detach().cpu().double().numpy()
        cell = batch.cell.detach().cpu().double().numpy()
        pairs = [
            pair_list(pos[ptr[s] : ptr[s + 1]], cell[s], cutoff_radial)
            for s in range(batch.n_structures)
        ]
    counts = np.array([len(p.i) for p in pairs], dtype=np.int64)
    edge_structure = np.repeat(np.arange(len(pairs), dtype=np.int64), counts)
    offsets = ptr[:-1][edge_structure] if len(edge_structure) else np.zeros(0, np.int64)
    centre = np.concatenate([p.i for p in pairs]) + offsets
    neighbour = np.concatenate([p.j for p in pairs]) + offsets
    shift = np.concatenate([p.shift for p in pairs]).reshape(-1, 3)
    dist = np.concatenate([p.distance for p in pairs])

    sp = species.cpu().numpy()
    n_atoms = int(ptr[-1])
    radial_index = centre * n_species + sp[neighbour]

    # Angular edges: r < r_c^a, sorted by pair type (stable, so centres stay grouped inside
    # each block); rank of each edge among its centre's angular edges gives the padded slot.
    ang = np.nonzero(dist < cutoff_angular)[0]
    pair_type = sp[centre[ang]] * n_species + sp[neighbour[ang]]
    order = np.argsort(pair_type, kind="stable")
    ang = ang[order]
    pair_counts = np.bincount(pair_type, minlength=n_species * n_species).tolist()
    c_ang = centre[ang]
    per_atom = np.bincount(c_ang, minlength=n_atoms)
    max_ang = int(per_atom.max()) if len(per_atom) and per_atom.size else 0
    # rank within centre: sort by centre (stable), then position minus the centre's start
    by_centre = np.argsort(c_ang, kind="stable")
    starts = np.concatenate([[0], np.cumsum(per_atom)[:-1]])
    rank = np.empty(len(ang), dtype=np.int64)
    rank[by_centre] = np.arange(len(ang)) - starts[c_ang[by_centre]]
    slot = c_ang * max(max_ang, 1) + rank

    dev = batch.device
    as_long = lambda a: torch.as_tensor(a, dtype=torch.long, device=dev)  # noqa: E731
    return Graph(
        centre=as_long(centre),
        neighbour=as_long(neighbour),
        shift=torch.as_tensor(shift, dtype=batch.dtype, device=dev),
        edge_structure=as_long(edge_structure),
        radial_index=as_long(radial_index),
        angular_edges=as_long(ang),
        angular_slot=as_long(slot),
        pair_counts=pair_counts,
        max_angular=max(max_ang, 1),
        species=species,
    )


def edge_vectors(batch: StructureBatch, graph: Graph) -> torch.Tensor:
    """[E, 3] vectors r_ij = r_j - r_i + shift·cell, differentiable in positions and cell."""
    cell_e = batch.cell[graph.edge_structure]  # [E, 3, 3]
    return (
        batch.positions[graph.neighbour]
        - batch.positions[graph.centre]
        + torch.einsum("ea,eab->eb", graph.shift, cell_e)
    )
