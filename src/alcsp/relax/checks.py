"""Detection of unphysical structures during a relaxation, vectorised over the batch.

Shape letters: S structures, N atoms. Every check but the interatomic distance works on
[S]-shaped tensors in one pass. The closest-approach check needs periodic neighbours: it
runs vesin per structure at a short cutoff (fraction x twice the largest covalent radius
present, a cutoff of ~1-3 Å). A batched all-pairs distance over 27 periodic images would
cost S x A^2 x 27 distances (8.6 M for 50 cells of 80 atoms) and still miss images in
skewed or small cells, while vesin is exact for any cell at ~0.2 ms per 50-atom cell; the
relaxer calls it every ``distance_check_interval`` steps and on finishing, so it stays a
few per cent of the potential's own cost.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import vesin
from ase.data import covalent_radii

from alcsp.relax.config import Code, RelaxConfig

_COVALENT = np.asarray(covalent_radii, dtype=float)


def cell_checks(
    cell: torch.Tensor,
    volume: torch.Tensor,
    start_volume: torch.Tensor,
    energy: torch.Tensor,
    n_atoms: torch.Tensor,
    config: RelaxConfig,
) -> torch.Tensor:
    """Status codes [S] (0 = fine) from cell shape, volume and energy checks.

    cell [S, 3, 3] Å, volume [S] Å³, start_volume [S] Å³, energy [S] eV, n_atoms [S].
    Where several fail, the last assigned code wins (order below, energy floor last).
    """
    code = torch.zeros(cell.shape[0], dtype=torch.long, device=cell.device)  # [S]
    n = n_atoms.to(volume.dtype)
    vpa = volume / n  # [S]
    lengths = torch.linalg.norm(cell, dim=2)  # [S, 3]
    # cos of the angles (b,c), (a,c), (a,b)
    unit = cell / lengths.clamp_min(1e-12)[:, :, None]  # [S, 3, 3]
    cos = torch.stack(
        [
            (unit[:, 1] * unit[:, 2]).sum(-1),
            (unit[:, 0] * unit[:, 2]).sum(-1),
            (unit[:, 0] * unit[:, 1]).sum(-1),
        ],
        dim=1,
    )  # [S, 3]
    cos_max = math.cos(math.radians(config.min_cell_angle))
    ratio = volume / start_volume  # [S]

    code = torch.where(
        (ratio > config.max_volume_ratio) | (ratio < 1.0 / config.max_volume_ratio),
        int(Code.VOLUME_RATIO),
        code,
    )
    code = torch.where(cos.abs().amax(dim=1) > cos_max, int(Code.CELL_ANGLE), code)
    code = torch.where(
        (lengths.amin(dim=1) < config.min_cell_length)
        | (lengths.amax(dim=1) > config.max_cell_length),
        int(Code.CELL_LENGTH),
        code,
    )
    code = torch.where(vpa > config.max_volume_per_atom, int(Code.VOLUME_LARGE), code)
    code = torch.where(vpa < config.min_volume_per_atom, int(Code.VOLUME_SMALL), code)
    if config.energy_floor is not None:
        code = torch.where(energy / n < config.energy_floor, int(Code.ENERGY_FLOOR), code)
    return code


def min_distance_ratio(
    positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray, fraction: float
) -> tuple[float, int, int, float]:
    """Smallest d_ij / (r_i + r_j) over periodic pairs of one structure, below ``fraction``.

    positions [A, 3] Å, cell [3, 3] Å, numbers [A]. Returns (ratio, i, j, d); ratio is inf
    (and i = j = -1) when no pair is closer than ``fraction`` x (r_i + r_j). Pairs of an atom
    with its own periodic images count.
    """
    radii = _COVALENT[numbers]  # [A]
    cutoff = max(fraction * 2.0 * float(radii.max()), 0.5)
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, d = nl.compute(positions, cell, True, "ijd")
    if len(d) == 0:
        return math.inf, -1, -1, math.inf
    r = d / (radii[i] + radii[j])
    k = int(np.argmin(r))
    if r[k] >= fraction:
        return math.inf, -1, -1, math.inf
    return float(r[k]), int(i[k]), int(j[k]), float(d[k])


def describe(code: int, values: dict[str, float], config: RelaxConfig) -> str:
    """A one-line reason for a final status code; ``values`` holds the per-structure data."""
    c = Code(code)
    if c == Code.CONVERGED:  # never empty: extxyz cannot store an empty string value
        return (
            f"max |force| {values['fmax']:.2g} eV/Å, max |stress + P| "
            f"{values['stress_gpa']:.2g} GPa, last enthalpy change {values['dh']:.2g} eV/atom"
        )
    if c == Code.MAX_STEPS:
        return (
            f"not converged after {config.max_steps} steps (max |force| "
            f"{values['fmax']:.3g} eV/Å, max |stress + P| {values['stress_gpa']:.3g} GPa, "
            f"last enthalpy change {values['dh']:.3g} eV/atom)"
        )
    if c == Code.NON_FINITE:
        return "non-finite energy, forces or stress from the potential"
    if c == Code.CLOSE_ATOMS:
        return (
            f"atoms {values['i']} and {values['j']} are {values['d']:.3f} Å apart, "
            f"{values['ratio']:.2f} x the sum of their covalent radii "
            f"(< {config.min_distance_fraction})"
        )
    if c == Code.VOLUME_SMALL:
        return f"volume {values['vpa']:.3g} Å³/atom below {config.min_volume_per_atom} Å³/atom"
    if c == Code.VOLUME_LARGE:
        return f"volume {values['vpa']:.3g} Å³/atom above {config.max_volume_per_atom} Å³/atom"
    if c == Code.ENERGY_FLOOR:
        return f"energy {values['epa']:.4g} eV/atom below the floor {config.energy_floor} eV/atom"
    if c == Code.CELL_LENGTH:
        return (
            f"lattice vector lengths {values['lmin']:.3g}-{values['lmax']:.3g} Å outside "
            f"[{config.min_cell_length}, {config.max_cell_length}] Å (cell collapsed or exploded)"
        )
    if c == Code.CELL_ANGLE:
        return (
            f"cell angle {values['angle']:.1f} degrees outside [{config.min_cell_angle}, "
            f"{180 - config.min_cell_angle}] (cell sheared flat)"
        )
    if c == Code.VOLUME_RATIO:
        what = "exploded" if values["ratio_v"] > 1 else "collapsed"
        return (
            f"cell {what}: volume {values['ratio_v']:.3g} x the starting volume "
            f"(bound {config.max_volume_ratio}x)"
        )
    raise ValueError(f"code {code} is not a final status")
