"""Full relaxation of a few structures with the oracle itself (the campaign's last step).

The ML hull overestimates enthalpies a little (structures relaxed on an approximate surface),
so the paper relaxes the structures near the hull with DFT. This runs ASE's BFGS on a
``FrechetCellFilter`` at the campaign pressure with the oracle's own calculator, one job per
structure on the campaign's executor, in a working directory of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from alcsp.oracle.ase_oracle import ASEOracle, JobInfo
from alcsp.units import GPA


@dataclass
class OracleRelaxation:
    atoms: Atoms  # final geometry
    energy: float  # eV
    forces: np.ndarray  # [n, 3] eV/Å
    stress: np.ndarray  # [3, 3] eV/Å³
    steps: int
    converged: bool
    wall_time: float  # s


def _relax_job(args) -> OracleRelaxation:
    spec, params, atoms, pressure_gpa, fmax, max_steps, directory = args
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    t0 = time.perf_counter()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    job = JobInfo(key=directory.name, attempt=1, directory=directory)
    a = atoms.copy()
    a.calc = spec.make_calculator(a, params, job)
    filt = FrechetCellFilter(a, scalar_pressure=pressure_gpa * GPA)
    opt = BFGS(filt, logfile=str(directory / "relax.log"))
    converged = bool(opt.run(fmax=fmax, steps=max_steps))
    energy = float(a.get_potential_energy())
    out = a.copy()
    return OracleRelaxation(
        atoms=Atoms(numbers=out.numbers, positions=out.positions, cell=out.cell, pbc=True),
        energy=energy, forces=np.array(a.get_forces()), stress=np.array(a.get_stress(voigt=False)),
        steps=opt.nsteps, converged=converged, wall_time=time.perf_counter() - t0,
    )  # fmt: skip


def relax_with_oracle(
    oracle: ASEOracle,
    structures: list[Atoms],
    pressure_gpa: float,
    fmax: float,
    max_steps: int,
    executor,
) -> list[OracleRelaxation | None]:
    """Relax each structure with the oracle's calculator; None where a job failed."""
    root = oracle.workdir / "final-relax"
    items = [
        (oracle.spec, oracle.params, a, pressure_gpa, fmax, max_steps, root / f"job-{k:04d}")
        for k, a in enumerate(structures)
    ]
    out: list[OracleRelaxation | None] = [None] * len(items)
    for res in executor.map_unordered(_relax_job, items):
        if res.ok:
            out[res.index] = res.value
    return out
