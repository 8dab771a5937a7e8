"""Electronic structure of a structure with the campaign's GPAW oracle settings.

Per structure (``analyse_electronic``), after one converged SCF (``run_scf``: the oracle's
own calculator, ``alcsp.oracle.gpaw.GPAWSpec.make_calculator``, with the same plane-wave
cutoff, k-point spacing, XC functional, Fermi–Dirac smearing and band count as the labels):

- **Band structure** along the standard path of the cell's Bravais lattice (ASE's
  ``atoms.cell.bandpath()``, Setyawan–Curtarolo labels), from a non-self-consistent run at
  the fixed SCF density (``calc.fixed_density``, no symmetry reduction).
- **Band gap** (ASE's ``ase.dft.bandgap.bandgap``) over the SCF k-mesh and the band path
  together: the mesh can miss the band edges (an even Monkhorst–Pack mesh has no Γ) and the
  path can miss edges off the high-symmetry lines. 0 when a band crosses the Fermi level (a
  metal, "gapless"); ``direct`` when the smallest direct gap equals the gap. eV.
- **Total and projected DOS** (``gpaw.dos.DOSCalculator``) on the SCF k-mesh, or on a denser
  mesh of a fixed-density run when ``ElectronicSettings.dos_kspacing`` is set: states/eV per
  cell, both spins, energies relative to the Fermi level, linear-tetrahedron integration by
  default (``dos_width`` = 0) or Gaussians of ``dos_width`` eV. The projected DOS of an element
  sums, over its atoms, the squared PAW projections on the bound partial waves of every
  angular momentum (the expansion coefficients of the states in the atomic partial waves
  inside the augmentation spheres): a local measure, not a partition of the total DOS (the
  element PDOS can add up to less or, as for fcc Al at E_F, to more than the total).
- **DOS at the Fermi level**, N(E_F) (states/eV/cell), and its **hydrogen fraction**
  H_DOS = PDOS_H(E_F) / Σ_elements PDOS(E_F): the share of the projected states at E_F that
  sit on hydrogen, the ratio of projections used by Belli et al. (their QE ``projwfc.x``
  Löwdin projections; here PAW projections). None without hydrogen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

#: Bumped whenever a change of the method can change a result (part of the cache key).
ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class ElectronicSettings:
    """How the DOS and bands are sampled (the SCF itself is the oracle's).

    ``dos_kspacing`` None: the DOS of the SCF k-mesh; else a fixed-density run on a mesh of
    that spacing (2π/Å, as the oracle's ``kspacing``). ``dos_width`` 0: linear tetrahedra;
    > 0: Gaussian broadening, eV. The DOS is tabulated from ``dos_emin`` to ``dos_emax`` eV
    around E_F in ``dos_points`` points; the band path has ``path_points`` k-points."""

    dos_kspacing: float | None = None
    dos_width: float = 0.0  # eV
    dos_emin: float = -20.0  # eV relative to E_F
    dos_emax: float = 10.0  # eV relative to E_F
    dos_points: int = 1501
    path_points: int = 120

    def __post_init__(self) -> None:
        if self.dos_kspacing is not None and not self.dos_kspacing > 0:
            raise ValueError(f"dos_kspacing must be > 0 (2π/Å), got {self.dos_kspacing}")
        if self.dos_width < 0:
            raise ValueError(f"dos_width must be >= 0 eV, got {self.dos_width}")
        if not self.dos_emin < 0 < self.dos_emax:
            raise ValueError(
                f"the DOS window must contain E_F: dos_emin < 0 < dos_emax, got "
                f"{self.dos_emin}, {self.dos_emax}"
            )
        if self.dos_points < 3 or self.path_points < 2:
            raise ValueError("dos_points must be >= 3 and path_points >= 2")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ElectronicSettings:
        return cls(**d)


def oracle_key(params: Any) -> str:
    """A short stable digest of the oracle parameters (a frozen dataclass) that made a SCF."""
    text = json.dumps(dataclasses.asdict(params), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def electronic_key(params: Any, settings: ElectronicSettings) -> str:
    """Cache key: the method version, the oracle parameters and the DOS/band settings."""
    s = settings
    return (
        f"electronic-v{ALGORITHM_VERSION};gpaw={oracle_key(params)};"
        f"dosk={s.dos_kspacing};w={s.dos_width:g};E=[{s.dos_emin:g},{s.dos_emax:g}]x"
        f"{s.dos_points};path={s.path_points}"
    )


@dataclass(frozen=True)
class BandStructure:
    """Bands along ``path`` (ASE notation, e.g. "GHNGPH,PN"): ``energies`` [spin, k, band]
    eV relative to E_F at the path coordinate ``x`` [k] (1/Å), special points ``labels``
    at ``label_x``."""

    path: str
    x: tuple[float, ...]
    label_x: tuple[float, ...]
    labels: tuple[str, ...]
    energies: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "x": list(self.x),
            "label_x": list(self.label_x),
            "labels": list(self.labels),
            "energies": np.round(self.energies, 5).tolist(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BandStructure:
        return cls(
            str(d["path"]),
            tuple(float(v) for v in d["x"]),
            tuple(float(v) for v in d["label_x"]),
            tuple(str(v) for v in d["labels"]),
            np.array(d["energies"], dtype=float),
        )


@dataclass(frozen=True)
class ElectronicStructure:
    """The electronic structure of one structure (module docstring). Energies in eV, DOS in
    states/eV per cell (both spins), ``dos_energies`` relative to ``fermi_level``."""

    formula: str
    n_atoms: int
    fermi_level: float  # eV, GPAW's absolute Fermi level
    gap: float  # eV, 0 for a metal
    direct_gap: float  # eV, smallest direct gap (0 for a metal)
    gap_is_direct: bool
    vbm_k: tuple[float, float, float] | None  # scaled k of the valence band maximum
    cbm_k: tuple[float, float, float] | None
    dos_energies: np.ndarray
    dos_total: np.ndarray
    pdos: dict[str, np.ndarray]  # element -> PDOS (augmentation spheres)
    dos_at_fermi: float  # N(E_F), states/eV/cell
    pdos_at_fermi: dict[str, float]
    h_dos: float | None  # PDOS_H(E_F) / Σ PDOS(E_F); None without H
    bands: BandStructure
    dos_kpts: tuple[int, int, int]  # the mesh of the DOS

    @property
    def is_metal(self) -> bool:
        return self.gap <= 0.0

    @property
    def gap_kind(self) -> str:
        if self.is_metal:
            return "metal"
        return "direct" if self.gap_is_direct else "indirect"

    @property
    def dos_at_fermi_per_atom(self) -> float:
        return self.dos_at_fermi / self.n_atoms

    def to_json(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "n_atoms": self.n_atoms,
            "fermi_level": self.fermi_level,
            "gap": self.gap,
            "direct_gap": self.direct_gap,
            "gap_is_direct": self.gap_is_direct,
            "vbm_k": None if self.vbm_k is None else list(self.vbm_k),
            "cbm_k": None if self.cbm_k is None else list(self.cbm_k),
            "dos_energies": [float(self.dos_energies[0]), float(self.dos_energies[-1])],
            "dos_total": np.round(self.dos_total, 6).tolist(),
            "pdos": {k: np.round(v, 6).tolist() for k, v in self.pdos.items()},
            "dos_at_fermi": self.dos_at_fermi,
            "pdos_at_fermi": self.pdos_at_fermi,
            "h_dos": self.h_dos,
            "bands": self.bands.to_json(),
            "dos_kpts": list(self.dos_kpts),
            # derived, for readers of the file
            "gap_kind": self.gap_kind,
            "dos_at_fermi_per_atom": self.dos_at_fermi_per_atom,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ElectronicStructure:
        total = np.array(d["dos_total"], dtype=float)
        lo, hi = d["dos_energies"]
        return cls(
            formula=str(d["formula"]),
            n_atoms=int(d["n_atoms"]),
            fermi_level=float(d["fermi_level"]),
            gap=float(d["gap"]),
            direct_gap=float(d["direct_gap"]),
            gap_is_direct=bool(d["gap_is_direct"]),
            vbm_k=None if d["vbm_k"] is None else _k_point(d["vbm_k"]),
            cbm_k=None if d["cbm_k"] is None else _k_point(d["cbm_k"]),
            dos_energies=np.linspace(float(lo), float(hi), len(total)),
            dos_total=total,
            pdos={k: np.array(v, dtype=float) for k, v in d["pdos"].items()},
            dos_at_fermi=float(d["dos_at_fermi"]),
            pdos_at_fermi={k: float(v) for k, v in d["pdos_at_fermi"].items()},
            h_dos=None if d["h_dos"] is None else float(d["h_dos"]),
            bands=BandStructure.from_json(d["bands"]),
            dos_kpts=_mesh(d["dos_kpts"]),
        )


def _k_point(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Three scaled k coordinates (a JSON list or a row of k-points)."""
    kx, ky, kz = values
    return float(kx), float(ky), float(kz)


def _mesh(values: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """A k-point mesh, three integers."""
    n1, n2, n3 = values
    return int(n1), int(n2), int(n3)


# ---------------------------------------------------------------------------- the SCF


def run_scf(atoms: Atoms, params: Any, directory: Path, key: str = "scf"):
    """A converged GPAW SCF of ``atoms`` with the oracle's calculator and ``params``
    (``GPAWParams``), its log ``directory/params.txt``. Returns ``(atoms, calc)``: the
    structure as computed (``gpaw_cell``: the Minkowski-reduced basis of a badly skewed
    cell, the same crystal) with the calculator attached. Raises GPAW's
    ``KohnShamConvergenceError`` when the SCF does not converge within ``params.maxiter``."""
    from alcsp.oracle.ase_oracle import JobInfo
    from alcsp.oracle.gpaw import GPAWSpec

    spec = GPAWSpec()
    spec.preflight(params)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prepared = spec.prepare(atoms).copy()
    prepared.calc = spec.make_calculator(prepared, params, JobInfo(key, 1, directory))
    prepared.get_potential_energy()
    return prepared, prepared.calc


def _eigenvalues(calc, nk: int) -> np.ndarray:
    """[spin, k, band] eigenvalues (eV, absolute) of the ``nk`` k-points of ``calc``."""
    nspins = calc.get_number_of_spins()
    return np.array(
        [[calc.get_eigenvalues(kpt=k, spin=s) for k in range(nk)] for s in range(nspins)]
    )


def _projector_ls(setup) -> list[int]:
    """The angular momenta with a bound partial wave in a PAW setup."""
    return sorted({int(l) for n, l in zip(setup.n_j, setup.l_j, strict=True) if n >= 0})


def _dos(calc, atoms: Atoms, energies: np.ndarray, width: float):
    """Total DOS and element PDOS on ``energies`` (eV relative to E_F) of ``calc``."""
    dos = calc.dos(shift_fermi_level=True)
    total = np.asarray(dos.raw_dos(energies, width=width), dtype=float)
    pdos: dict[str, np.ndarray] = {}
    for a, symbol in enumerate(atoms.get_chemical_symbols()):
        for ell in _projector_ls(calc.setups[a]):
            part = np.asarray(dos.raw_pdos(energies, a=a, l=ell, width=width), dtype=float)
            pdos[symbol] = pdos.get(symbol, 0.0) + part
    return total, pdos


def analyse_electronic(
    atoms: Atoms,
    calc,
    settings: ElectronicSettings | None = None,
    directory: Path | None = None,
) -> ElectronicStructure:
    """Bands, gap, DOS, PDOS and N(E_F) of ``atoms`` from its converged SCF ``calc`` (as
    ``run_scf`` returns them); the non-self-consistent runs log to ``directory`` (None:
    no log)."""
    from ase.dft.bandgap import bandgap

    from alcsp.oracle.ase_oracle import kpts_from_spacing

    settings = settings or ElectronicSettings()
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def txt(name: str) -> str | None:
        return None if directory is None else str(Path(directory) / name)

    fermi = float(calc.get_fermi_level())
    nbands = int(calc.get_number_of_bands())
    # converge the bands up to 3 eV above the conduction band minimum (eigenvalues to
    # ~1e-3 eV); all but the top two bands when there are not enough bands for that
    converge: dict[str, Any] = {"bands": "CBM+3", "eigenstates": 1e-6}
    fallback = {"bands": max(1, nbands - 2) if nbands > 4 else nbands, "eigenstates": 1e-6}

    def fixed(name: str, **kw):
        try:
            return calc.fixed_density(txt=txt(name), convergence=converge, **kw)
        except Exception as exc:  # gpaw.new.scf.TooFewBandsError
            if "band" not in type(exc).__name__.lower() + str(exc).lower():
                raise
            return calc.fixed_density(txt=txt(name), convergence=fallback, **kw)

    # band structure: fixed density along the standard path
    path = atoms.cell.bandpath(npoints=settings.path_points)
    bs_calc = fixed("bands.txt", kpts=path.kpts, symmetry="off")
    path_eigs = _eigenvalues(bs_calc, len(path.kpts))
    x, label_x, labels = path.get_linear_kpoint_axis()

    # gap over the SCF mesh and the path together
    ibz = np.asarray(calc.get_ibz_k_points())
    mesh_eigs = _eigenvalues(calc, len(ibz))
    eigs = np.concatenate([mesh_eigs, path_eigs], axis=1)
    kpts = np.concatenate([ibz, path.kpts], axis=0)
    gap, vbm, cbm = bandgap(eigenvalues=eigs, efermi=fermi, kpts=kpts, output=None)
    direct, _, _ = bandgap(eigenvalues=eigs, efermi=fermi, kpts=kpts, direct=True, output=None)
    gap, direct = float(gap), float(direct)
    vbm_k: tuple[float, float, float] | None = None
    cbm_k: tuple[float, float, float] | None = None
    if gap > 0:
        vbm_k = _k_point(kpts[vbm[1]])
        cbm_k = _k_point(kpts[cbm[1]])

    # DOS: SCF mesh or a denser fixed-density mesh
    if settings.dos_kspacing is None:
        dos_calc = calc
        dos_kpts = _mesh(calc.wfs.kd.N_c)
    else:
        dos_kpts = kpts_from_spacing(atoms, settings.dos_kspacing)
        dos_calc = fixed("dos.txt", kpts=dos_kpts)
    energies = np.linspace(settings.dos_emin, settings.dos_emax, settings.dos_points)
    total, pdos = _dos(dos_calc, atoms, energies, settings.dos_width)
    at_ef_total, at_ef = _dos(dos_calc, atoms, np.array([0.0]), settings.dos_width)
    pdos_at_fermi = {k: float(v[0]) for k, v in at_ef.items()}
    projected = sum(pdos_at_fermi.values())
    h_dos = None
    if "H" in pdos_at_fermi:
        h_dos = pdos_at_fermi["H"] / projected if projected > 0 else 0.0

    return ElectronicStructure(
        formula=atoms.get_chemical_formula(),
        n_atoms=len(atoms),
        fermi_level=fermi,
        gap=gap,
        direct_gap=direct,
        gap_is_direct=gap > 0 and abs(direct - gap) < 1e-6,
        vbm_k=vbm_k,
        cbm_k=cbm_k,
        dos_energies=energies,
        dos_total=total,
        pdos=pdos,
        dos_at_fermi=float(at_ef_total[0]),
        pdos_at_fermi=pdos_at_fermi,
        h_dos=h_dos,
        bands=BandStructure(
            path=path.path,
            x=tuple(float(v) for v in x),
            label_x=tuple(float(v) for v in label_x),
            labels=tuple(str(v) for v in labels),
            energies=path_eigs - fermi,
        ),
        dos_kpts=dos_kpts,
    )


def element_order(symbols: Sequence[str]) -> list[str]:
    """Elements in order of first appearance, hydrogen last (plot and table order)."""
    seen = list(dict.fromkeys(symbols))
    return [s for s in seen if s != "H"] + (["H"] if "H" in seen else [])
