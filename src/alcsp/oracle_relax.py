"""Full relaxation of a few structures with the oracle itself (references and final stage).

The ML hull overestimates enthalpies a little (structures relaxed on an approximate surface),
so the paper relaxes the structures near the hull with DFT. This runs ASE's BFGS on a
``FrechetCellFilter`` at the campaign pressure with the oracle's own calculator, one job per
structure on the campaign's executor, each in a folder of its own::

    <oracle workdir>/<key>/input.json       hash of the structure this folder relaxes
                           trajectory.traj  every step: geometry, F, E0, forces, stress
                           bfgs.json        BFGS's inverse-Hessian state (ASE restart file)
                           progress.json    oracle calls spent before each restart
                           result.json      the finished outcome
                           relax.log, and the code's own files

A kill resumes a job from its last step: the filter is rebuilt on the original cell (its
strain coordinates are relative to it), the geometry set to the last trajectory frame and
BFGS restarted from its stored state, so the resumed path is the uninterrupted one. A
finished job is read back, never redone. Every evaluation of the code counts as one call.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alcsp.oracle.ase_oracle import ASEOracle, JobInfo, energies_of, structure_key
from alcsp.oracle.base import Label
from alcsp.units import GPA


class OracleRelaxStatus(StrEnum):
    CONVERGED = "converged"
    MAX_STEPS = "max_steps"  # stopped at the step limit
    TIME_LIMIT = "time_limit"  # stopped at the wall-time limit


@dataclass
class OracleRelaxation:
    atoms: Atoms  # final geometry (in the cell basis the code computed in, ``spec.prepare``)
    energy: float  # eV, force-consistent free energy F
    energy_zero: float  # eV, zero-smearing energy E0
    forces: np.ndarray  # [n, 3] eV/Å
    stress: np.ndarray  # [3, 3] eV/Å³
    steps: int  # BFGS steps in all, over restarts
    calls: int  # oracle evaluations in all, over restarts
    status: OracleRelaxStatus
    wall_time: float  # s, this run only

    def label(self, oracle: str) -> Label:
        """The label at the final geometry."""
        return Label(self.energy, self.forces, self.stress, oracle, self.wall_time,
                     energy_zero=self.energy_zero)  # fmt: skip


@dataclass
class OracleRelaxFailure:
    reason: str
    calls: int
    wall_time: float


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _frames(path: Path) -> list[Atoms]:
    """The readable frames of a trajectory (a kill may leave the last one half written)."""
    from ase.io.trajectory import Trajectory

    if not path.exists():
        return []
    out: list[Atoms] = []
    try:
        with Trajectory(str(path)) as traj:
            for k in range(len(traj)):
                out.append(traj[k])
    except Exception:  # a truncated tail: keep what was read
        pass
    return out


def _result_record(r: OracleRelaxation) -> dict:
    return {"numbers": r.atoms.numbers.tolist(), "positions": r.atoms.positions.tolist(),
            "cell": r.atoms.cell.array.tolist(), "energy": r.energy,
            "energy_zero": r.energy_zero, "forces": r.forces.tolist(),
            "stress": r.stress.tolist(), "steps": r.steps, "calls": r.calls,
            "status": str(r.status), "wall_time": r.wall_time}  # fmt: skip


def _from_record(d: dict) -> OracleRelaxation:
    atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=True)
    return OracleRelaxation(
        atoms, float(d["energy"]), float(d["energy_zero"]), np.asarray(d["forces"], float),
        np.asarray(d["stress"], float).reshape(3, 3), int(d["steps"]), int(d["calls"]),
        OracleRelaxStatus(d["status"]), float(d["wall_time"]),
    )  # fmt: skip


def _relax_job(args) -> OracleRelaxation | OracleRelaxFailure:
    spec, params, atoms, pressure_gpa, fmax, max_steps, max_time_s, directory = args
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.io.trajectory import Trajectory
    from ase.optimize import BFGS

    t0 = time.perf_counter()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = structure_key(atoms)
    marker = directory / "input.json"
    if (_read_json(marker) or {}).get("input") != digest:
        for name in ("trajectory.traj", "bfgs.json", "progress.json", "result.json"):
            (directory / name).unlink(missing_ok=True)
        _write_json(marker, {"input": digest})
    done = _read_json(directory / "result.json")
    if done is not None and done.get("status") in set(OracleRelaxStatus):
        previous = _from_record(done)
        if previous.status is OracleRelaxStatus.CONVERGED or previous.steps >= max_steps:
            return previous  # finished (a larger max_steps continues a step-capped one)
    traj_path, restart = directory / "trajectory.traj", directory / "bfgs.json"
    frames = _frames(traj_path)
    # Calls = trajectory frames + one repeated evaluation at each resume point.
    restarts = int((_read_json(directory / "progress.json") or {}).get("restarts", 0))
    if restart.exists() and _read_json(restart) is None:
        restart.unlink()  # half written by a kill: restart BFGS with a fresh Hessian
    a = spec.prepare(atoms).copy()
    a.calc = None
    steps_before = max(0, len(frames) - 1)
    job = JobInfo(key=directory.name, attempt=1, directory=directory)
    calls_now = 0
    try:
        a.calc = spec.make_calculator(a, params, job)
        # The filter's strain coordinates are relative to the cell it is built on: always
        # the input's, then the geometry of the last step.
        filt = FrechetCellFilter(a, scalar_pressure=pressure_gpa * GPA)
        if frames:
            last = frames[-1]
            a.set_cell(last.cell, scale_atoms=False)
            a.set_positions(last.positions)
            restarts += 1
            _write_json(directory / "progress.json", {"restarts": restarts})
        else:
            restart.unlink(missing_ok=True)
        opt = BFGS(filt, logfile=str(directory / "relax.log"), restart=str(restart))
        traj = Trajectory(str(traj_path), "a")
        first = [bool(frames)]

        def record() -> None:
            nonlocal calls_now
            calls_now += 1
            if first[0]:  # the resume point: already in the trajectory
                first[0] = False
                return
            free, zero = energies_of(a.calc)
            snap = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=True)
            snap.calc = SinglePointCalculator(snap, energy=zero, free_energy=free,
                                              forces=a.get_forces(),
                                              stress=a.get_stress(voigt=False))  # fmt: skip
            traj.write(snap)

        opt.attach(record, interval=1)
        status = OracleRelaxStatus.MAX_STEPS
        left = max(0, max_steps - steps_before)
        for converged in opt.irun(fmax=fmax, steps=left):
            if converged:
                status = OracleRelaxStatus.CONVERGED
                break
            if max_time_s is not None and time.perf_counter() - t0 > max_time_s:
                status = OracleRelaxStatus.TIME_LIMIT
                break
        traj.close()
        free, zero = energies_of(a.calc)
        result = OracleRelaxation(
            atoms=Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=True),
            energy=free, energy_zero=zero, forces=np.array(a.get_forces()),
            stress=np.array(a.get_stress(voigt=False)), steps=steps_before + opt.nsteps,
            calls=len(_frames(traj_path)) + restarts,
            status=status, wall_time=time.perf_counter() - t0,
        )  # fmt: skip
    except Exception as exc:  # a failed relaxation is an outcome, never the campaign's end
        return OracleRelaxFailure(
            f"{type(exc).__name__}: {exc}".strip()[:2000],
            len(frames) + restarts + calls_now,
            time.perf_counter() - t0,
        )
    _write_json(directory / "result.json", _result_record(result))
    return result


def relax_with_oracle(
    oracle: ASEOracle,
    structures: list[Atoms],
    keys: list[str],
    pressure_gpa: float,
    fmax: float,
    max_steps: int,
    executor,
    max_time_s: float | None = None,
) -> list[OracleRelaxation | OracleRelaxFailure]:
    """Relax each structure with the oracle's calculator in ``oracle.workdir / key``; one
    outcome per structure, in input order."""
    if len(keys) != len(structures):
        raise ValueError(f"{len(keys)} keys for {len(structures)} structures")
    items = [
        (oracle.spec, oracle.params, a, pressure_gpa, fmax, max_steps, max_time_s,
         oracle.workdir / k)
        for a, k in zip(structures, keys, strict=True)
    ]  # fmt: skip
    out: list[OracleRelaxation | OracleRelaxFailure] = [
        OracleRelaxFailure("the executor returned no result", 0, 0.0) for _ in items
    ]
    for res in executor.map_unordered(_relax_job, items):
        if res.ok:
            out[res.index] = res.value
        else:
            out[res.index] = OracleRelaxFailure(f"worker failed: {res.error}", 0, 0.0)
    return out
