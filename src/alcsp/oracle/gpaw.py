"""GPAW plane-wave DFT as an oracle (PBE, PAW setups from the ``gpaw-data`` package).

Install with ``scripts/install_gpaw.sh``. k-points follow the paper's spacing
2π × 0.03 Å⁻¹ by default; SCF non-convergence (``KohnShamConvergenceError``) is a
recorded failure, retried once with slower (looser) density mixing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import Calculator

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

    def __post_init__(self):
        if not self.ecut > 0:
            raise ValueError(f"gpaw ecut must be > 0 eV, got {self.ecut}")
        if not self.kspacing > 0:
            raise ValueError(f"gpaw kspacing must be > 0 (2π/Å), got {self.kspacing}")
        if self.smearing < 0:
            raise ValueError(f"gpaw smearing must be >= 0 eV, got {self.smearing}")
        if self.maxiter < 1:
            raise ValueError(f"gpaw maxiter must be >= 1, got {self.maxiter}")


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

    def make_calculator(self, atoms: Atoms, params: GPAWParams, job: JobInfo) -> Calculator:
        from gpaw import GPAW, PW, FermiDirac, Mixer

        kw: dict[str, Any] = dict(
            mode=PW(params.ecut),
            xc=params.xc,
            kpts=kpts_from_spacing(atoms, params.kspacing),
            occupations=FermiDirac(params.smearing),
            maxiter=params.maxiter,
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
        return GPAW(**kw)

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
        from ase.geometry import cell_to_cellpar, minkowski_reduce

        if all(SKEW_LIMITS[0] < a < SKEW_LIMITS[1] for a in cell_to_cellpar(atoms.cell)[3:]):
            return super().compute(atoms, params, job)
        reduced = atoms.copy()
        reduced.set_cell(minkowski_reduce(atoms.cell.array)[0], scale_atoms=False)
        reduced.wrap()
        return super().compute(reduced, params, job)
