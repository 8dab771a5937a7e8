"""A fast T_c *estimate* for hydrides: the networking-value fit of Belli, Novoa,
Contreras-García and Errea, Nat. Commun. 12, 5381 (2021).

    Φ_DOS = φ · H_f · H_DOS^(1/3),     T_c ≈ (750 Φ_DOS − 85) K,   σ ≈ 60 K

- φ, the **networking value**: the highest ELF isovalue at which the region ELF ≥ φ forms a
  network periodic in all three directions (``alcsp.analysis.elf``), here required to pass
  through a hydrogen atom;
- H_f = N_H / N_atoms, the hydrogen fraction of the atoms;
- H_DOS, the hydrogen fraction of the projected DOS at the Fermi level
  (``alcsp.analysis.electronic``).

The fit was made to ~100 Eliashberg/McMillan T_c of predicted hydrides; its spread about
them is ~60 K (the paper: "predict T_c … with an accuracy of about 60 K"). It is an
**estimate with that error, not an Eliashberg calculation**: no phonons, no electron–phonon
coupling, no μ*. A value ≤ 0 K means the fit predicts no (or a very low) T_c. Sources:
the formula and the coefficients 750 K and −85 K as in the authors' own code (the earliest
stored ``src/get_tc.py`` of TcESTIME, github.com/juliacontrerasgarcia/Tcestime, June 2023,
where that line is already commented out in favour of a refit 429.3 Φ_DOS − 10.4 K; the
current release uses 456.34 Φ_DOS − 9.46 K); the error as quoted with the paper. The
descriptors agree with what TcESTIME printed for the three structures of its examples (φ
within 0.016, H_DOS within 0.14, T_c of this fit within 22 K): docs/tc-belli.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

from alcsp.analysis import elf as elf_mod

#: Bumped whenever a change of the method can change a result (part of the cache key).
ALGORITHM_VERSION = 1

#: Belli et al. (2021): T_c ≈ SLOPE · Φ_DOS + INTERCEPT, K, with standard error SIGMA.
SLOPE_K = 750.0
INTERCEPT_K = -85.0
SIGMA_K = 60.0
REFERENCE = (
    "Belli, Novoa, Contreras-García, Errea, Nat. Commun. 12, 5381 (2021): "
    "T_c ≈ 750 K · φ·H_f·H_DOS^(1/3) − 85 K, σ ≈ 60 K"
)
DISCLAIMER = (
    "estimate from the networking-value fit of Belli et al. (2021), about ±60 K; "
    "not an Eliashberg calculation"
)


@dataclass(frozen=True)
class TcSettings:
    """How φ is measured on the ELF grid. ``refine``: the grid is resampled ``refine`` times
    finer per direction (periodic cubic splines) before thresholding, so the saddle points
    that decide φ are not missed between grid points; ``tol``: bisection tolerance on φ;
    ``hydrogen_radius`` Å: the network must reach this close to an H nucleus
    (None: any 3D network counts)."""

    refine: int = 2
    tol: float = 1e-3
    hydrogen_radius: float | None = 0.3  # Å
    ncut: float = 1e-6  # electrons/bohr³: ELF = 0 below this pseudo density

    def __post_init__(self) -> None:
        if self.refine < 1:
            raise ValueError(f"refine must be >= 1, got {self.refine}")
        if not 0 < self.tol < 0.1:
            raise ValueError(f"tol must be in (0, 0.1), got {self.tol}")
        if self.hydrogen_radius is not None and not self.hydrogen_radius > 0:
            raise ValueError(f"hydrogen_radius must be > 0 Å, got {self.hydrogen_radius}")

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"tc-v{ALGORITHM_VERSION};{hashlib.sha1(text.encode()).hexdigest()[:10]}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TcSettings:
        return cls(**d)


@dataclass(frozen=True)
class TcEstimate:
    """The descriptors and the Belli et al. T_c estimate of one structure (K)."""

    formula: str
    phi: float  # networking value (ELF isovalue, dimensionless)
    h_fraction: float  # N_H / N_atoms
    h_dos: float  # hydrogen fraction of the projected DOS at E_F
    grid: tuple[int, int, int]  # ELF grid the networking value was found on

    @property
    def phi_dos(self) -> float:
        """Φ_DOS = φ · H_f · H_DOS^(1/3)."""
        return self.phi * self.h_fraction * max(self.h_dos, 0.0) ** (1.0 / 3.0)

    @property
    def tc(self) -> float:
        """The fit, K (≤ 0: no T_c predicted)."""
        return belli_tc(self.phi, self.h_fraction, self.h_dos)

    @property
    def sigma(self) -> float:
        return SIGMA_K

    def to_json(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "phi": self.phi,
            "h_fraction": self.h_fraction,
            "h_dos": self.h_dos,
            "grid": list(self.grid),
            # derived, for readers of the file
            "phi_dos": self.phi_dos,
            "tc_estimate_k": self.tc,
            "sigma_k": self.sigma,
            "note": DISCLAIMER,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TcEstimate:
        return cls(
            formula=str(d["formula"]),
            phi=float(d["phi"]),
            h_fraction=float(d["h_fraction"]),
            h_dos=float(d["h_dos"]),
            grid=_grid(d["grid"]),
        )


def _grid(shape: Sequence[int]) -> tuple[int, int, int]:
    """The three point counts of a 3D grid (a JSON list or an array's shape)."""
    n0, n1, n2 = shape
    return int(n0), int(n1), int(n2)


def belli_tc(phi: float, h_fraction: float, h_dos: float) -> float:
    """T_c ≈ 750 K · φ · H_f · H_DOS^(1/3) − 85 K (Belli et al. 2021), K."""
    for name, v in (("phi", phi), ("h_fraction", h_fraction), ("h_dos", h_dos)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    return SLOPE_K * phi * h_fraction * h_dos ** (1.0 / 3.0) + INTERCEPT_K


def hydrogen_fraction(atoms: Atoms) -> float:
    """H_f = N_H / N_atoms."""
    return float(np.count_nonzero(atoms.numbers == 1) / len(atoms))


def refine_grid(field: np.ndarray, factor: int) -> np.ndarray:
    """``field`` on a grid ``factor`` times finer per direction (periodic cubic splines),
    grid point i at fractional i / (factor · n) like the input's i / n."""
    if factor == 1:
        return np.asarray(field, dtype=float)
    from scipy import ndimage

    shape = [factor * s for s in field.shape]
    coords = np.meshgrid(*(np.arange(m) / factor for m in shape), indexing="ij")
    return ndimage.map_coordinates(
        np.asarray(field, dtype=float), coords, order=3, mode="grid-wrap"
    )


def networking_value_of(
    elf: np.ndarray, atoms: Atoms, settings: TcSettings | None = None
) -> tuple[float, tuple[int, int, int]]:
    """φ of the ELF grid ``elf`` of ``atoms`` (its cell) and the grid it was found on."""
    settings = settings or TcSettings()
    field = refine_grid(elf, settings.refine)
    required = None
    if settings.hydrogen_radius is not None:
        h = atoms.numbers == 1
        if not h.any():
            raise ValueError("the networking value needs hydrogen: the structure has none")
        required = elf_mod.hydrogen_points(
            field.shape, atoms.cell.array, atoms.positions[h], settings.hydrogen_radius
        )
    phi = elf_mod.networking_value(field, settings.tol, required)
    return phi, _grid(field.shape)


def estimate_tc(
    atoms: Atoms, calc, h_dos: float | None, settings: TcSettings | None = None
) -> TcEstimate:
    """φ from the ELF of the converged GPAW ``calc`` of ``atoms``, and the estimate with
    ``h_dos`` (from ``analyse_electronic``)."""
    settings = settings or TcSettings()
    if not (atoms.numbers == 1).any():
        raise ValueError(f"{atoms.get_chemical_formula()} has no hydrogen: no T_c estimate")
    if h_dos is None:
        raise ValueError("the T_c estimate needs H_DOS (the electronic analysis)")
    elf = elf_mod.elf_grid(calc, ncut=settings.ncut)
    phi, grid = networking_value_of(elf, atoms, settings)
    return TcEstimate(atoms.get_chemical_formula(), phi, hydrogen_fraction(atoms), h_dos, grid)
