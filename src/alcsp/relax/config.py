"""Typed, validated settings of the batched relaxer, and the status codes it reports.

Units: eV, Å, eV/Å, GPa at this boundary (converted to eV/Å³ inside the relaxer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from alcsp.units import GPA
from alcsp.vocab import RelaxStatus


class Code(IntEnum):
    """Per-structure outcome codes held in the ``[S]`` long status tensor."""

    RUNNING = 0
    CONVERGED = 1
    MAX_STEPS = 2
    NON_FINITE = 3  # NaN/inf energy, forces or stress
    CLOSE_ATOMS = 4  # two atoms closer than a fraction of their covalent radii
    VOLUME_SMALL = 5  # volume per atom below the lower bound
    VOLUME_LARGE = 6  # volume per atom above the upper bound
    ENERGY_FLOOR = 7  # energy per atom below the floor
    CELL_LENGTH = 8  # a lattice vector too short or too long
    CELL_ANGLE = 9  # an angle between lattice vectors too extreme
    VOLUME_RATIO = 10  # cell collapsed or exploded relative to the start


#: The three statuses a relaxation can end with (``alcsp.vocab.RelaxStatus``).
STATUS_CONVERGED = RelaxStatus.CONVERGED
STATUS_MAX_STEPS = RelaxStatus.MAX_STEPS
STATUS_UNPHYSICAL = RelaxStatus.UNPHYSICAL


def status_name(code: int) -> RelaxStatus:
    if code == Code.CONVERGED:
        return RelaxStatus.CONVERGED
    if code == Code.MAX_STEPS:
        return RelaxStatus.MAX_STEPS
    if code >= Code.NON_FINITE:
        return RelaxStatus.UNPHYSICAL
    raise ValueError(f"code {code} is not a final status")


@dataclass(frozen=True)
class RelaxConfig:
    """Settings of a batched BFGS relaxation (fixed or variable cell, at a target pressure).

    Convergence (all must hold, per structure):
      * every Cartesian force component |f| <= ``fmax`` (eV/Å), the paper's criterion;
      * the enthalpy change since the previous step <= ``energy_tol`` (eV/atom), the paper's;
      * every component of sigma + P*I <= ``stress_tol`` (GPa), variable cell only.
        The default 0.01 GPa (6.2e-5 eV/Å³) makes the generalised cell force of ASE's
        FrechetCellFilter, (V/N)|sigma + P|, at most 1e-3 eV for cells up to 16 Å³/atom,
        i.e. as strict as the force criterion; the enthalpy error it leaves,
        ~ (V/N) dsigma^2 / 2B, is below 1e-7 eV/atom.

    Optimiser (defaults match ASE's ``BFGS``: alpha 70 eV/Å², max step 0.2 Å):
      ``alpha`` is the initial Hessian (the inverse Hessian starts as I/alpha);
      ``max_step`` caps the largest row (atom or cell row) of a step, scaling the whole step;
      ``energy_rise_reset``: an enthalpy rise above this (eV/atom) resets the inverse Hessian
      to I/alpha; None (default) never resets, as ASE's BFGS. Measured on 96 random Mg–Ca–H
      cells at 300 GPa with an ACNN model, a reset at 1e-5 eV/atom (the old default) left 7
      at the 500-step cap and 77 converged in 278 mean steps; without resets none hit the
      cap and 84 converged in 249 (docs/benchmarks.md): a rise is usually one overshooting
      step, and discarding the curvature learned so far costs more than the overshoot. The
      update is still skipped when s.y <= 0, so every inverse Hessian stays positive
      definite and every step is a descent direction.

    Cell: ``fixed_cell`` keeps the cell; otherwise the cell moves through the log of the
    deformation gradient scaled by ``exp_cell_factor`` (None = number of atoms, as ASE's
    ``FrechetCellFilter``, so minima and step scales agree with it).

    Batching: ``atoms_budget`` caps the atoms evaluated together; ``hessian_mb`` caps the
    padded [S, D, D] float64 inverse Hessians. A single structure larger than either still
    runs (alone). ``sort_by_size`` feeds structures largest first so that batches hold
    similar sizes and padding stays small (results keep the input order regardless).

    Unphysical outcomes (the structure stops, keeping its last geometry):
      atoms closer than ``min_distance_fraction`` x (sum of covalent radii), checked with a
      neighbour list every ``distance_check_interval`` steps and at the end. A running
      structure stops when ``close_contact_patience`` consecutive checks find a close pair
      (default 2: the contact lasted at least ``distance_check_interval`` steps); one that
      ends (converged or step cap) with a close pair is unphysical at once. Patience 1 stops
      at the first contact. Why not 1 by default: a quasi-Newton step of up to ``max_step``
      can carry a pair through a brief close approach that a physical repulsion undoes in
      the next steps (at 300 GPa, random Mg–Ca–H starts dip to 0.45-0.5 and then converge
      physically; docs/benchmarks.md), while a potential with a hole keeps the pair there or
      collapses further, and is caught one interval later. Volume per atom
      outside [``min_volume_per_atom``, ``max_volume_per_atom``] Å³; energy per atom below
      ``energy_floor`` eV (None = no floor: set it a few eV below the lowest label energy per
      atom of the oracle you train on, since absolute energies depend on the code); a lattice
      vector outside [``min_cell_length``, ``max_cell_length``] Å (0.7 Å is below the shortest
      bond in nature, H2's 0.74 Å, and every atom sits one lattice vector from its own image);
      an angle between lattice vectors outside [``min_cell_angle``, 180 - ``min_cell_angle``]
      degrees; a volume ratio to the start outside [1/``max_volume_ratio``, ``max_volume_ratio``].

    Trajectory: ``frame_interval`` k > 0 keeps the geometry of each structure at step 0, at
    every k-th step and at the end in ``RelaxResult.frames`` (for a committee to find where
    a relaxation left the training data); 0 (default) keeps none and costs nothing.
    """

    fmax: float = 1e-3
    energy_tol: float = 1e-6
    stress_tol: float = 0.01
    max_steps: int = 500
    max_step: float = 0.2
    alpha: float = 70.0
    energy_rise_reset: float | None = None
    fixed_cell: bool = False
    exp_cell_factor: float | None = None
    atoms_budget: int = 1024
    hessian_mb: float = 512.0
    sort_by_size: bool = True
    min_distance_fraction: float = 0.5
    distance_check_interval: int = 5
    close_contact_patience: int = 2
    min_volume_per_atom: float = 0.5
    max_volume_per_atom: float = 150.0
    energy_floor: float | None = None
    min_cell_length: float = 0.7
    max_cell_length: float = 100.0
    min_cell_angle: float = 20.0
    max_volume_ratio: float = 10.0
    frame_interval: int = 0

    def __post_init__(self) -> None:
        def positive(name: str, hint: str) -> None:
            v = getattr(self, name)
            if (
                not isinstance(v, int | float)
                or isinstance(v, bool)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"RelaxConfig.{name} must be a positive number, got {v!r}; {hint}")

        positive("fmax", "the paper uses 1e-3 eV/Å per force component.")
        positive("energy_tol", "the paper uses 1e-6 eV/atom.")
        positive("stress_tol", "use e.g. 0.01 GPa.")
        positive("max_step", "ASE's default is 0.2 Å.")
        positive("alpha", "ASE's default initial Hessian is 70 eV/Å².")
        if self.energy_rise_reset is not None:
            positive("energy_rise_reset", "use e.g. 1e-3 eV/atom, or None for no resets.")
        positive("hessian_mb", "use e.g. 512 MB.")
        positive("min_volume_per_atom", "use e.g. 0.5 Å³/atom.")
        positive("max_volume_per_atom", "use e.g. 150 Å³/atom.")
        positive("min_cell_length", "use e.g. 0.7 Å.")
        positive("max_cell_length", "use e.g. 100 Å.")
        for name in (
            "max_steps",
            "atoms_budget",
            "distance_check_interval",
            "close_contact_patience",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RelaxConfig.{name} must be an integer >= 1, got {v!r}.")
        v = self.frame_interval
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(
                f"RelaxConfig.frame_interval must be an integer >= 0, got {v!r}; 0 keeps no "
                "trajectory frames, k keeps the geometry every k steps."
            )
        if self.max_step > 1.0:
            raise ValueError(
                f"RelaxConfig.max_step={self.max_step} Å is too large for a quasi-Newton step; "
                "use at most 1 Å (ASE's default is 0.2 Å)."
            )
        if not 0.0 <= self.min_distance_fraction < 1.0:
            raise ValueError(
                f"RelaxConfig.min_distance_fraction must be in [0, 1), got "
                f"{self.min_distance_fraction!r}; 0.5 flags atoms closer than half the sum of "
                "their covalent radii (0 disables the check)."
            )
        if self.max_volume_per_atom <= self.min_volume_per_atom:
            raise ValueError(
                f"RelaxConfig.max_volume_per_atom ({self.max_volume_per_atom}) must exceed "
                f"min_volume_per_atom ({self.min_volume_per_atom})."
            )
        if self.max_cell_length <= self.min_cell_length:
            raise ValueError(
                f"RelaxConfig.max_cell_length ({self.max_cell_length}) must exceed "
                f"min_cell_length ({self.min_cell_length})."
            )
        if not 0.0 < self.min_cell_angle < 90.0:
            raise ValueError(
                "RelaxConfig.min_cell_angle must be in (0, 90) degrees, "
                f"got {self.min_cell_angle!r}."
            )
        if not (math.isfinite(self.max_volume_ratio) and self.max_volume_ratio > 1.0):
            raise ValueError(
                f"RelaxConfig.max_volume_ratio must be > 1, got {self.max_volume_ratio!r}; "
                "e.g. 10 flags cells that shrink or grow tenfold."
            )
        if self.energy_floor is not None and not math.isfinite(self.energy_floor):
            raise ValueError(
                f"RelaxConfig.energy_floor must be a finite eV/atom value or None, "
                f"got {self.energy_floor!r}."
            )
        if self.exp_cell_factor is not None and not (
            math.isfinite(self.exp_cell_factor) and self.exp_cell_factor > 0
        ):
            raise ValueError(
                f"RelaxConfig.exp_cell_factor must be positive or None (number of atoms), "
                f"got {self.exp_cell_factor!r}."
            )

    @property
    def stress_tol_ev(self) -> float:
        """``stress_tol`` in eV/Å³."""
        return self.stress_tol * GPA
