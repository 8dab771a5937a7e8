"""Quantum ESPRESSO (``pw.x``) as an oracle through ``ase.calculators.espresso``.

The user supplies the command (e.g. ``"mpirun -np 4 pw.x"``), the pseudopotential
directory and one pseudopotential file per element. A missing ``pw.x`` is a recorded
``missing_binary`` failure whose message says how to install it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from alcsp.oracle._binary import missing_executables
from alcsp.oracle.ase_oracle import (
    CalculatorSpec,
    JobInfo,
    MissingBinary,
    SCFNotConverged,
    kpts_from_spacing,
)
from alcsp.oracle.base import FailureKind


@dataclass(frozen=True)
class EspressoParams:
    pseudo_dir: str = ""  # directory holding the pseudopotential files
    pseudopotentials: Mapping[str, str] = field(default_factory=dict)  # element -> file
    command: str = "pw.x"
    ecutwfc: float = 70.0  # Ry, wavefunction cutoff (the paper: 70 Ry for Mg–Ca–H)
    ecutrho: float | None = None  # Ry, density cutoff; None = 4 × ecutwfc
    kspacing: float = 0.03  # 2π Å⁻¹
    smearing: str = "mv"
    degauss: float = 0.01  # Ry
    mixing_beta: float = 0.7
    electron_maxstep: int = 100
    conv_thr: float = 1e-8  # Ry

    def __post_init__(self):
        if not self.pseudo_dir:
            raise ValueError(
                "espresso needs pseudo_dir: the directory with your .UPF files "
                '(e.g. pseudo_dir = "/opt/sssp")'
            )
        if not self.pseudopotentials:
            raise ValueError(
                "espresso needs pseudopotentials: a table element -> UPF file name, "
                'e.g. pseudopotentials = { Mg = "Mg.upf", H = "H.upf" }'
            )
        if not self.ecutwfc > 0:
            raise ValueError(f"espresso ecutwfc must be > 0 Ry, got {self.ecutwfc}")


class EspressoSpec(CalculatorSpec):
    name: ClassVar[str] = "espresso"
    Params: ClassVar[type] = EspressoParams
    default_retries: ClassVar[tuple[dict[str, Any], ...]] = (
        {"mixing_beta": 0.3, "electron_maxstep": 300},
    )
    default_isolate: ClassVar[bool] = True

    def preflight(self, params: EspressoParams) -> None:
        missing = missing_executables(params.command)
        if missing:
            raise MissingBinary(
                f"{', '.join(missing)} not found on PATH (command {params.command!r}); install "
                "Quantum ESPRESSO (e.g. `apt-get install quantum-espresso`) or set "
                "[oracle.parameters] command to the full path of pw.x"
            )

    def make_calculator(self, atoms: Atoms, params: EspressoParams, job: JobInfo) -> BaseCalculator:
        from ase.calculators.espresso import Espresso, EspressoProfile

        species = set(atoms.get_chemical_symbols())
        absent = sorted(species - set(params.pseudopotentials))
        if absent:
            raise ValueError(
                f"no pseudopotential given for {absent}; add them to "
                "[oracle.parameters] pseudopotentials"
            )
        input_data = {
            "control": {"calculation": "scf", "tprnfor": True, "tstress": True, "disk_io": "low"},
            "system": {
                "ecutwfc": params.ecutwfc,
                "ecutrho": params.ecutrho or 4 * params.ecutwfc,
                "occupations": "smearing",
                "smearing": params.smearing,
                "degauss": params.degauss,
            },
            "electrons": {
                "mixing_beta": params.mixing_beta,
                "electron_maxstep": params.electron_maxstep,
                "conv_thr": params.conv_thr * len(atoms),
            },
        }
        return Espresso(
            profile=EspressoProfile(command=params.command, pseudo_dir=params.pseudo_dir),
            pseudopotentials={s: params.pseudopotentials[s] for s in species},
            input_data=input_data,
            kpts=kpts_from_spacing(atoms, params.kspacing),
            directory=str(job.directory),
        )

    def check_converged(self, calc: BaseCalculator, job: JobInfo) -> None:
        out = job.directory / "espresso.pwo"
        if out.exists() and "convergence NOT achieved" in out.read_text(errors="replace"):
            raise SCFNotConverged(f"pw.x did not converge the SCF (see {out})")

    def classify(self, exc: BaseException, job: JobInfo) -> FailureKind:
        out = job.directory / "espresso.pwo"
        if out.exists() and "convergence NOT achieved" in out.read_text(errors="replace"):
            return FailureKind.SCF_NOT_CONVERGED
        return super().classify(exc, job)
