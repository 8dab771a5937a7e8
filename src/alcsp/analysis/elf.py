"""The electron localization function (ELF) of a GPAW calculation and its networking value.

**ELF.** ``elf_grid`` is GPAW's ``gpaw.elf.elf_from_dft_calculation``: Becke and Edgecombe's
ELF = 1 / (1 + (D/D_h)²) with D = τ − |∇n|²/(8n) the Pauli kinetic energy density and
D_h = (3/10)(3π²)^(2/3) n^(5/3) its value in the uniform electron gas of the same density,
evaluated from the *pseudo* (smooth PAW) density n and kinetic energy density τ on the
calculation's real-space grid. GPAW's n and τ there include the smooth pseudo-core terms
ñc and τ̃c of the setups (``density.nct_R``, ``tauct_R``), which the QE/VASP pseudo-valence
ELF of the reference data does not. It is dimensionless, in [0, 1]; points where the pseudo
density is below ``ncut`` (electrons/bohr³) get 0. Inside the PAW spheres of the heavy
atoms the pseudo ELF is not the all-electron one, as with the VASP/QE pseudo ELF the
networking value was defined on. Where the bottleneck of the network is an H–H contact the
core terms do not matter (CaYH20: φ 0.544 with and without them); where it is a bond to a
heavy atom they do: Im-3m H3S at a = 3.073 Å, φ = 0.694 with them, 0.741 without, 0.707 from
the authors' QE ELF (benchmarks/tc_belli_compare.py, docs/tc-belli.md).

**Networking value** (Belli, Novoa, Contreras-García and Errea, Nat. Commun. 12, 5381
(2021)): φ is the highest isovalue v at which the region ELF ≥ v contains a network that
is periodic in all three directions of the crystal (it percolates through the infinite
crystal, not just across one cell or along a slab). ``percolation_rank`` finds, on the
periodic grid, the connected components of a thresholded region (6-connectivity, so two
grid points touching only at an edge or a corner are not connected), joins the components
across the cell faces with their lattice shifts, and returns the largest rank of the lattice
translations that map a component onto itself: 0 for finite islands (e.g. isolated H2
molecules), 1 for chains, 2 for slabs, 3 for a 3D network. The rank is independent of the
cell choice; testing only "touches both faces" would call a diagonal chain 2D. Since the
region grows as v falls, percolation is monotone in v and ``networking_value`` bisects on
v to ``tol``. With ``hydrogen`` positions given (the default of ``alcsp.analysis.tc``) the
3D network must pass through a hydrogen atom (a grid point within ``hydrogen_radius`` Å of
one), so that networks of heavy-atom semicore shells alone do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 6-connectivity: grid points sharing a face.
_FACES = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class Percolation:
    """The periodic connectivity of a thresholded grid: ``rank`` is the largest number of
    independent lattice directions along which one component repeats (0–3); ``components``
    the periodic components (after joining across the faces), ``rank_by_component`` each
    one's rank (keys are the labels of ``labels``, the non-periodic labelling), and
    ``periodic_label`` maps each non-periodic label to its periodic component."""

    rank: int
    labels: np.ndarray  # int [n0, n1, n2], 0 outside the region
    periodic_label: dict[int, int]
    rank_by_component: dict[int, int]


def percolation(mask: np.ndarray) -> Percolation:
    """Periodic connected components of ``mask`` (bool [n0, n1, n2], periodic in all three
    directions) and the dimensionality of the network they form (module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"percolation needs a 3D grid, got shape {mask.shape}")
    labels, n = ndimage.label(mask, structure=_FACES)
    if n == 0:
        return Percolation(0, labels, {}, {})
    # edges between labels across each periodic face: last layer -> first layer of the
    # next cell along axis d, lattice shift +e_d
    adjacency: dict[int, list[tuple[int, tuple[int, int, int]]]] = {k: [] for k in range(1, n + 1)}
    for d in range(3):
        last = np.take(labels, -1, axis=d)
        first = np.take(labels, 0, axis=d)
        both = (last > 0) & (first > 0)
        pairs = np.unique(np.stack([last[both], first[both]], axis=1), axis=0)
        shift = (int(d == 0), int(d == 1), int(d == 2))
        back = (-shift[0], -shift[1], -shift[2])
        for u, v in pairs:
            adjacency[int(u)].append((int(v), shift))
            adjacency[int(v)].append((int(u), back))
    offset: dict[int, np.ndarray] = {}
    periodic_label: dict[int, int] = {}
    rank_by_component: dict[int, int] = {}
    for root in range(1, n + 1):
        if root in offset:
            continue
        offset[root] = np.zeros(3, dtype=int)
        periodic_label[root] = root
        cycles: list[np.ndarray] = []
        stack = [root]
        while stack:
            u = stack.pop()
            for v, s in adjacency[u]:
                reached = offset[u] + np.asarray(s)
                if v not in offset:
                    offset[v] = reached
                    periodic_label[v] = root
                    stack.append(v)
                elif not np.array_equal(reached, offset[v]):
                    cycles.append(reached - offset[v])
        rank_by_component[root] = int(np.linalg.matrix_rank(np.array(cycles))) if cycles else 0
    return Percolation(max(rank_by_component.values()), labels, periodic_label, rank_by_component)


def percolation_rank(mask: np.ndarray) -> int:
    """0 (islands), 1 (chains), 2 (slabs) or 3 (a 3D network): ``percolation(mask).rank``."""
    return percolation(mask).rank


def hydrogen_points(
    shape: Sequence[int], cell: np.ndarray, positions: np.ndarray, radius: float
) -> np.ndarray:
    """Flat indices of the grid points (grid point (i, j, k) at fractional (i/n0, j/n1,
    k/n2) of ``cell``, Å) within ``radius`` Å of any of ``positions`` (Å), periodic images
    included; always at least the nearest grid point of each position."""
    shape = tuple(int(s) for s in shape)
    cell = np.asarray(cell, dtype=float)
    frac = np.stack(np.meshgrid(*(np.arange(s) / s for s in shape), indexing="ij"), axis=-1)
    points = set()
    inv = np.linalg.inv(cell)
    for r in np.atleast_2d(positions):
        f = np.asarray(r, dtype=float) @ inv
        nearest = np.round(f * shape).astype(int) % shape
        points.add(int(np.ravel_multi_index(tuple(nearest), shape)))
        diff = frac - f
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ cell, axis=-1)
        points.update(int(p) for p in np.flatnonzero(dist <= radius))
    return np.array(sorted(points), dtype=int)


def is_percolating(field: np.ndarray, isovalue: float, required: np.ndarray | None = None) -> bool:
    """Whether {field ≥ isovalue} holds a 3D-periodic network; with ``required`` (flat grid
    indices), a 3D network that contains at least one of those points."""
    p = percolation(np.asarray(field) >= isovalue)
    if required is None:
        return p.rank == 3
    flat = p.labels.ravel()[required]
    roots = {p.periodic_label[int(lab)] for lab in flat if lab > 0}
    return any(p.rank_by_component[r] == 3 for r in roots)


def networking_value(
    field: np.ndarray, tol: float = 1e-3, required: np.ndarray | None = None
) -> float:
    """The highest isovalue at which ``field`` ≥ value percolates in 3D (bisection to
    ``tol``; the value returned percolates, value + tol does not). 0 when even the whole
    grid does not qualify (``required`` points absent)."""
    field = np.asarray(field, dtype=float)
    lo, hi = float(field.min()), float(field.max())
    if not is_percolating(field, lo, required):
        return 0.0
    if is_percolating(field, hi, required):
        return hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if is_percolating(field, mid, required):
            lo = mid
        else:
            hi = mid
    return lo


def elf_grid(calc, ncut: float = 1e-6) -> np.ndarray:
    """The pseudo-valence ELF of a converged GPAW (new ASE interface) calculation on its
    real-space grid, [n0, n1, n2] (grid point (i, j, k) at fractional (i/n0, j/n1, k/n2))."""
    from gpaw.elf import elf_from_dft_calculation

    elf = elf_from_dft_calculation(calc, ncut=ncut)
    data = np.asarray(elf.gather().data if hasattr(elf, "gather") else elf.data)
    if data.ndim == 4:  # a spin axis
        data = data[0]
    return np.array(data, dtype=float)
