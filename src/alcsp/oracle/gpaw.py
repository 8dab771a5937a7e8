"""GPAW plane-wave DFT as an oracle (PBE, PAW setups from the ``gpaw-data`` package).

Install with ``scripts/install_gpaw.sh``. k-points follow the paper's spacing
2π × 0.03 Å⁻¹ by default; SCF non-convergence (``KohnShamConvergenceError``) is a
recorded failure, retried once with slower (looser) density mixing.

Bands: GPAW's own default caps the band count at the number of bound partial waves of
the setups, which for the 10-electron Ca setup is 5, exactly the occupied bands: no empty
band at all (the log says "Fermi level: inf") and fcc Ca at 300 GPa comes out 1.09 eV/atom
too high. ``nbands = "auto"`` (the default here) is GPAW's formula without that cap,
ceil(1.2 × N_valence / 2) + 4.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from alcsp.oracle.ase_oracle import CalculatorSpec, JobInfo, MissingBinary, kpts_from_spacing

#: GPAW's own range for the angles between lattice vectors (degrees), gpaw/new/builder.py.
SKEW_LIMITS = (40.0, 140.0)


@dataclass(frozen=True)
class GPAWParams:
    ecut: float = 600.0  # eV, plane-wave cutoff
    kspacing: float = 0.03  # 2π Å⁻¹ between k-points (the paper's SCF setting)
    xc: str = "PBE"
    smearing: float = 0.1  # eV, Fermi-Dirac width
    mixer_beta: float | None = None  # density mixing; None = GPAW's default (0.05)
    mixer_nmaxold: int | None = None
    mixer_weight: float | None = None
    maxiter: int = 333  # SCF iterations before KohnShamConvergenceError
    convergence_energy: float | None = None  # eV per valence electron; None = GPAW default
    txt: str = "gpaw.txt"  # log file name inside the job directory
    # "auto" = ceil(1.2 * N_valence / 2) + 4; an int > 0 is a count, an int <= 0 means
    # occupied + |n|, "120%" a percentage of the occupied bands (GPAW's forms).
    nbands: int | str = "auto"

    def __post_init__(self):
        if not self.ecut > 0:
            raise ValueError(f"gpaw ecut must be > 0 eV, got {self.ecut}")
        if not self.kspacing > 0:
            raise ValueError(f"gpaw kspacing must be > 0 (2π/Å), got {self.kspacing}")
        if self.smearing < 0:
            raise ValueError(f"gpaw smearing must be >= 0 eV, got {self.smearing}")
        if self.maxiter < 1:
            raise ValueError(f"gpaw maxiter must be >= 1, got {self.maxiter}")
        ok_str = isinstance(self.nbands, str) and (
            self.nbands == "auto"
            or (self.nbands.endswith("%") and _is_positive_number(self.nbands[:-1]))
        )
        ok_int = isinstance(self.nbands, int) and not isinstance(self.nbands, bool)
        if not (ok_str or ok_int):
            raise ValueError(
                f'gpaw nbands must be "auto", an integer or a percentage such as "130%", '
                f"got {self.nbands!r}"
            )


def _is_positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def valence_electrons(atoms: Atoms, xc: str = "PBE") -> int:
    """Valence electrons of ``atoms`` in GPAW's PAW setups (e.g. 10 per Ca, 1 per H)."""
    from gpaw.setup_data import SetupData

    per = {s: SetupData(s, xc).Nv for s in set(atoms.get_chemical_symbols())}
    return int(round(sum(per[s] for s in atoms.get_chemical_symbols())))


def auto_nbands(atoms: Atoms, xc: str = "PBE") -> int:
    """ceil(1.2 × N_valence / 2) + 4: GPAW's default formula without its cap at the bound
    partial waves (which leaves Ca with no empty band)."""
    return math.ceil(1.2 * valence_electrons(atoms, xc) / 2) + 4


def sphere_radii(symbols: set[str], xc: str = "PBE") -> dict[str, float]:
    """Radius (Å) of each element's PAW augmentation sphere: the largest partial-wave
    cutoff of its setup."""
    from ase.units import Bohr
    from gpaw.setup_data import SetupData

    return {s: float(max(SetupData(s, xc).rcut_j)) * Bohr for s in symbols}


def sphere_overlaps(atoms: Atoms, xc: str = "PBE") -> str:
    """ "" when no two PAW spheres overlap; otherwise a sentence naming the closest
    offending pair. Overlapping spheres make PAW's frozen-core, non-overlapping-sphere
    assumption wrong: at high pressure (Ca-Ca 2.245 Å at 300 GPa against 2 × 1.175 Å)
    the energy error grows with the overlap."""
    from ase.neighborlist import neighbor_list

    radii = sphere_radii(set(atoms.get_chemical_symbols()), xc)
    sym = atoms.get_chemical_symbols()
    i, j, d = neighbor_list("ijd", atoms, 2 * max(radii.values()))
    worst = None
    for a, b, r in zip(i, j, d, strict=True):
        limit = radii[sym[a]] + radii[sym[b]]
        if r < limit and (worst is None or r / limit < worst[2] / worst[3]):
            worst = (sym[a], sym[b], float(r), limit)
    if worst is None:
        return ""
    a, b, r, limit = worst
    return (
        f"PAW spheres overlap: {a}-{b} at {r:.3f} Å < {limit:.3f} Å (sum of the setups' "
        "radii); results at this density carry a setup error: check against harder "
        "setups or a code with smaller cores"
    )


class GPAWSpec(CalculatorSpec):
    name: ClassVar[str] = "gpaw"
    Params: ClassVar[type] = GPAWParams
    # Looser (slower, longer-memory) mixing and more iterations after an SCF failure.
    default_retries: ClassVar[tuple[dict[str, Any], ...]] = (
        {"mixer_beta": 0.02, "mixer_nmaxold": 8, "mixer_weight": 100.0, "maxiter": 600},
    )
    default_isolate: ClassVar[bool] = True

    def preflight(self, params: GPAWParams) -> None:
        try:
            import gpaw  # noqa: F401
        except ImportError as exc:
            raise MissingBinary(
                f"GPAW is not installed ({exc}); run scripts/install_gpaw.sh "
                "(or `make dft`) to build it into .venv"
            ) from exc

    def make_calculator(self, atoms: Atoms, params: GPAWParams, job: JobInfo) -> BaseCalculator:
        from gpaw import GPAW, PW, FermiDirac, Mixer

        kw: dict[str, Any] = dict(
            mode=PW(params.ecut),
            xc=params.xc,
            kpts=kpts_from_spacing(atoms, params.kspacing),
            occupations=FermiDirac(params.smearing),
            maxiter=params.maxiter,
            nbands=auto_nbands(atoms, params.xc) if params.nbands == "auto" else params.nbands,
            txt=str(job.directory / params.txt),
        )
        if params.mixer_beta is not None:
            kw["mixer"] = Mixer(
                beta=params.mixer_beta,
                nmaxold=params.mixer_nmaxold or 5,
                weight=params.mixer_weight or 50.0,
            )
        if params.convergence_energy is not None:
            kw["convergence"] = {"energy": params.convergence_energy}
        # gpaw's new ASECalculator duck-types ASE's calculator API without subclassing it; a
        # cast (not a type: ignore) so mypy agrees with and without gpaw installed (make lint
        # runs before `make dft`)
        return cast(BaseCalculator, GPAW(**kw))

    def compute(self, atoms: Atoms, params: GPAWParams, job: JobInfo):
        """As ``CalculatorSpec.compute``; a badly skewed cell is computed in its
        Minkowski-reduced basis.

        GPAW warns that results "may be wrong" when an angle between lattice vectors is
        outside (40°, 140°), which random and ML-relaxed cells often are. The reduced basis
        spans the same lattice in the same Cartesian frame (new cell = integer op @ cell,
        atoms wrapped, order kept), so energy, forces and stress belong to ``atoms`` as is.
        Cells GPAW accepts are left alone: reducing them too would switch between
        equivalent bases (and k-point meshes) under tiny strains, making the label jump.
        """
        overlap = sphere_overlaps(atoms, params.xc)
        if overlap:
            print(f"alcsp warning: {overlap}", file=sys.stderr)
        return super().compute(self.prepare(atoms), params, job)

    def prepare(self, atoms: Atoms) -> Atoms:
        return gpaw_cell(atoms)


def gpaw_cell(atoms: Atoms) -> Atoms:
    """``atoms`` as is when GPAW accepts its cell, else in its Minkowski-reduced basis
    (same lattice, same Cartesian frame, atoms wrapped, order kept)."""
    from ase.geometry import cell_to_cellpar, minkowski_reduce

    if all(SKEW_LIMITS[0] < a < SKEW_LIMITS[1] for a in cell_to_cellpar(atoms.cell)[3:]):
        return atoms
    reduced = atoms.copy()
    reduced.set_cell(minkowski_reduce(atoms.cell.array)[0], scale_atoms=False)
    reduced.wrap()
    return reduced
