"""Full relaxation of a few structures with the oracle itself (references and final stage).

The ML hull overestimates enthalpies a little (structures relaxed on an approximate surface),
so the paper relaxes the structures near the hull with DFT. This runs ASE's BFGS on a
``FrechetCellFilter`` at the campaign pressure with the oracle's own calculator, one job per
structure on the campaign's executor, each in a folder of its own::

    <oracle workdir>/final-relax/<key>/input.json    hash of the input this folder relaxes
                                       input.extxyz  the input structure (for people)
                                       relax.traj    every evaluation: geometry with F, E0,
                                                     forces and stress (ASE trajectory)
                                       bfgs.json     BFGS's Hessian state after each step
                                                     (BFGS(restart=...), with its step)
                                       state.json    oracle calls and wall time so far
                                       result.json   the finished outcome
                                       failure.json  the last failure (reason, traceback)
                                       relax.log     BFGS's log
                                       run-<n>/      the code's own files, one per run

The relaxation starts from ``spec.prepare(atoms)``, the cell the code computes single points
in (e.g. GPAW's Minkowski-reduced basis of a badly skewed cell); the final geometry is in
that basis (the same crystal as the input, atoms in the same order).

Resume. A killed job continues from the last readable trajectory frame (a half-written tail
is dropped): the filter is rebuilt on the prepared input cell (its strain coordinates are
relative to that cell), the geometry set to the frame, the frame's stored energies, forces
and stress reused (no repeated evaluation) and BFGS restarted from the stored Hessian, so
the resumed path is the uninterrupted one and the step count continues. A stored Hessian
that does not belong to the last frame (or cannot be read) is dropped: BFGS then restarts
from its initial Hessian at that frame. A folder whose ``input.json`` names another input
(other structure, pressure, code or parameters) is started afresh.

A finished ``result.json`` for the same input is read back without any calculation when it
answers the request: converged below the requested ``fmax``, or as many steps as
``max_steps``, or as much wall time as ``max_time_s``; otherwise (a larger ``max_steps``, a
tighter ``fmax``, more time) the job continues from its checkpoint. A failure is never
final: a later call retries from the checkpoint.

Costs. ``calls`` counts every evaluation of the code over all runs of a job, including
those before a kill (and one a kill interrupted: the count is saved before each
evaluation); ``wall_time`` is the job's wall time over all runs (up to the last saved
evaluation before a kill). ``max_time_s`` bounds that total: a relaxation stops after the
step during which it was exceeded. The oracle's ``timeout_s`` does not apply here (the code
runs in the executor's worker process, not in an isolated job).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alcsp.oracle.ase_oracle import (
    ASEOracle,
    CalculatorSpec,
    JobInfo,
    energies_of,
    structure_key,
    structure_problem,
)
from alcsp.oracle.base import Label
from alcsp.units import GPA
from alcsp.vocab import OracleRelaxStatus

#: Folder under the oracle's working directory holding one folder per relaxation.
RELAX_DIR = "final-relax"

TRAJECTORY = "relax.traj"
HESSIAN = "bfgs.json"
STATE = "state.json"
RESULT = "result.json"
FAILURE = "failure.json"
INPUT = "input.json"


@dataclass
class OracleRelaxation:
    """A relaxation that ran to its end (converged or stopped at a limit).

    ``atoms`` is the final geometry in the cell basis the code computed in
    (``spec.prepare`` of the input: the input's own basis for most codes). ``steps`` and
    ``calls`` (evaluations of the code) and ``wall_time`` are totals over every run of the
    job, a killed and resumed one included.
    """

    atoms: Atoms  # final geometry
    energy: float  # eV, force-consistent free energy F (what a potential trains on)
    energy_zero: float  # eV, zero-smearing energy E0 (what hulls use)
    forces: np.ndarray  # [n, 3] eV/Å
    stress: np.ndarray  # [3, 3] eV/Å³, ASE sign (positive = tensile)
    steps: int  # BFGS steps in all
    calls: int  # oracle evaluations in all
    status: OracleRelaxStatus
    wall_time: float  # s, all runs together

    @property
    def ok(self) -> bool:
        return True

    def label(self, oracle_name: str) -> Label:
        """The label at the final geometry (F as energy, E0 as energy_zero)."""
        return Label(
            energy=self.energy,
            forces=self.forces,
            stress=self.stress,
            oracle=oracle_name,
            wall_time=self.wall_time,
            attempts=1,
            energy_zero=self.energy_zero,
        )


@dataclass
class OracleRelaxFailure:
    """A relaxation that raised (SCF failure, crash, lost worker): why, and what it cost."""

    reason: str
    calls: int  # oracle evaluations spent on this job in all (the failed one included)
    wall_time: float  # s

    @property
    def ok(self) -> bool:
        return False

    @property
    def status(self) -> OracleRelaxStatus:
        return OracleRelaxStatus.FAILED


@dataclass(frozen=True)
class _RelaxJob:
    """One structure's relaxation, sent to a worker (picklable)."""

    spec: CalculatorSpec
    params: Any
    atoms: Atoms
    key: str
    directory: str
    pressure_gpa: float
    fmax: float
    max_steps: int
    max_time_s: float | None


# -- files ------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, json.dumps(obj))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def input_digest(atoms: Atoms, pressure_gpa: float, spec: CalculatorSpec, params: Any) -> str:
    """What a job folder relaxes: the structure, the pressure, the code and its settings."""
    h = hashlib.sha1()
    for part in (structure_key(atoms), repr(float(pressure_gpa)), spec.name, repr(params)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def read_frames(path: str | os.PathLike, n_atoms: int | None = None) -> list[Atoms]:
    """The readable frames of a relaxation trajectory, in order, each with its energies,
    forces and stress; reading stops at the first damaged frame (a kill or a truncated
    copy leaves the tail half written) and an unreadable header gives no frame."""
    from ase.io.trajectory import Trajectory

    path = Path(path)
    if not path.exists():
        return []
    out: list[Atoms] = []
    try:
        with Trajectory(str(path)) as traj:
            for k in range(len(traj)):
                frame = traj[k]
                if not _frame_ok(frame, n_atoms):
                    break
                out.append(frame)
    except Exception:  # damaged from here on: keep what was read
        pass
    return out


def _frame_ok(frame: Atoms, n_atoms: int | None) -> bool:
    calc = frame.calc
    if calc is None or (n_atoms is not None and len(frame) != n_atoms):
        return False
    res = calc.results
    if not {"energy", "free_energy", "forces", "stress"} <= set(res):
        return False
    arrays = (
        np.asarray(res["forces"]),
        np.asarray(res["stress"]),
        frame.positions,
        frame.cell.array,
    )
    return (
        arrays[0].shape == (len(frame), 3)
        and arrays[1].size in (6, 9)
        and all(np.isfinite(a).all() for a in arrays)
        and math.isfinite(res["energy"])
        and math.isfinite(res["free_energy"])
    )


def _write_frames_atomic(path: Path, frames: list[Atoms]) -> None:
    """Rewrite a trajectory with exactly ``frames`` (drops a damaged tail)."""
    from ase.io.trajectory import Trajectory

    tmp = path.with_name(path.name + ".tmp")
    with Trajectory(str(tmp), "w") as traj:
        for frame in frames:
            traj.write(frame)
    os.replace(tmp, path)


def _snapshot(atoms: Atoms, energy_zero: float, free_energy: float, forces, stress) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    stress = np.asarray(stress, float)
    if stress.shape == (3, 3):
        stress = full_3x3_to_voigt_6_stress(stress)
    snap = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    snap.calc = SinglePointCalculator(
        snap,
        energy=float(energy_zero),
        free_energy=float(free_energy),
        forces=np.asarray(forces, float),
        stress=stress,
    )
    return snap


def _checkpoint_cost(directory: Path, digest: str) -> tuple[int, float]:
    """(calls, wall seconds) a job folder has recorded for ``digest``."""
    state = _read_json(directory / STATE)
    calls, wall = 0, 0.0
    if isinstance(state, dict) and state.get("digest") == digest:
        calls, wall = int(state.get("calls", 0)), float(state.get("wall_time", 0.0))
    if (_read_json(directory / INPUT) or {}).get("digest") == digest:
        calls = max(calls, len(read_frames(directory / TRAJECTORY)))
    return calls, wall


def _result_record(r: OracleRelaxation, digest: str, fmax_reached: float) -> dict:
    return {
        "digest": digest,
        "numbers": r.atoms.numbers.tolist(),
        "positions": r.atoms.positions.tolist(),
        "cell": r.atoms.cell.array.tolist(),
        "energy": r.energy,
        "energy_zero": r.energy_zero,
        "forces": r.forces.tolist(),
        "stress": r.stress.tolist(),
        "steps": r.steps,
        "calls": r.calls,
        "status": str(r.status),
        "wall_time": r.wall_time,
        "fmax_reached": fmax_reached,  # largest filter force at the end (atoms and cell)
    }


def _read_back(path: Path, job: _RelaxJob, digest: str) -> OracleRelaxation | None:
    """The stored outcome when it answers this request (see the module docstring)."""
    d = _read_json(path)
    if not isinstance(d, dict) or d.get("digest") != digest:
        return None
    try:
        if float(d["fmax_reached"]) < job.fmax:
            status = OracleRelaxStatus.CONVERGED
        elif int(d["steps"]) >= job.max_steps:
            status = OracleRelaxStatus.MAX_STEPS
        elif job.max_time_s is not None and float(d["wall_time"]) >= job.max_time_s:
            status = OracleRelaxStatus.TIME_LIMIT
        else:
            return None  # the request asks for more: continue from the checkpoint
        atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=True)
        return OracleRelaxation(
            atoms=atoms,
            energy=float(d["energy"]),
            energy_zero=float(d["energy_zero"]),
            forces=np.asarray(d["forces"], float).reshape(len(atoms), 3),
            stress=np.asarray(d["stress"], float).reshape(3, 3),
            steps=int(d["steps"]),
            calls=int(d["calls"]),
            status=status,
            wall_time=float(d["wall_time"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _claim(directory: Path, digest: str, atoms: Atoms, job: _RelaxJob) -> None:
    """Make ``directory`` the folder of this input: a folder of another input is emptied."""
    from ase.io import write

    marker = _read_json(directory / INPUT)
    if isinstance(marker, dict) and marker.get("digest") == digest:
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    tmp = directory / "input.extxyz.tmp"
    write(tmp, atoms, format="extxyz")
    os.replace(tmp, directory / "input.extxyz")
    _write_json(
        directory / INPUT,
        {
            "digest": digest,
            "key": job.key,
            "oracle": job.spec.name,
            "params": repr(job.params),
            "pressure_gpa": float(job.pressure_gpa),
            "n_atoms": len(atoms),
        },
    )


def _make_bfgs(filt, restart: Path, logfile: Path):
    """ASE's BFGS, its restart file written atomically and tagged with the step count."""
    from ase._4.optimize.bfgs import BFGSMethod
    from ase.io.jsonio import read_json, write_json
    from ase.optimize import BFGS

    class CheckpointBFGS(BFGS):
        def dump(self, data):
            tmp = restart.with_name(restart.name + ".tmp")
            with open(tmp, "w") as fd:
                write_json(fd, {"nsteps": int(self.nsteps), "bfgs": list(data)})
            os.replace(tmp, restart)

        def read(self):
            obj = read_json(str(restart))
            hessian, self.pos0, self.forces0, self.maxstep, orig_cell = obj["bfgs"]
            self.atoms.orig_cell = np.asarray(orig_cell, float)
            self.state = BFGSMethod(np.asarray(hessian, float))

    return CheckpointBFGS(filt, restart=str(restart), logfile=str(logfile))


def _hessian_fits(path: Path, n_dof: int, last_step: int) -> bool:
    """Whether the stored BFGS state continues from frame ``last_step``: written at that
    step (a kill before the frame after it) or at the step before (the usual case)."""
    from ase.io.jsonio import read_json

    try:
        obj = read_json(str(path))
        step = int(obj["nsteps"])
        hessian, pos0, forces0 = (np.asarray(x, float) for x in obj["bfgs"][:3])
        return (
            step in (last_step, last_step - 1)
            and step >= 0
            and hessian.shape == (n_dof, n_dof)
            and pos0.size == n_dof
            and forces0.size == n_dof
            and np.isfinite(hessian).all()
        )
    except Exception:
        return False


# -- the job ----------------------------------------------------------------------------


def _evaluate(spec: CalculatorSpec, calc, atoms: Atoms, info: JobInfo) -> Atoms:
    """One evaluation of the code at ``atoms``: a snapshot carrying F, E0, forces, stress."""
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    a.calc = calc
    a.get_potential_energy()
    forces = np.array(a.get_forces(), dtype=float)
    stress = np.array(a.get_stress(voigt=True), dtype=float)
    spec.check_converged(calc, info)
    free, zero = energies_of(calc)
    if not (
        math.isfinite(free)
        and math.isfinite(zero)
        and np.isfinite(forces).all()
        and np.isfinite(stress).all()
    ):
        raise RuntimeError(f"{spec.name} returned non-finite energy, forces or stress")
    if forces.shape != (len(a), 3):
        raise RuntimeError(f"{spec.name} returned forces of shape {forces.shape}")
    return _snapshot(atoms, zero, free, forces, stress)


def _relax_job(job: _RelaxJob) -> OracleRelaxation | OracleRelaxFailure:
    """Relax one structure in ``job.directory``, resuming from its checkpoint."""
    t0 = time.perf_counter()
    directory = Path(job.directory)
    digest = input_digest(job.atoms, job.pressure_gpa, job.spec, job.params)
    calls, prior_wall = 0, 0.0

    def wall() -> float:
        return prior_wall + time.perf_counter() - t0

    problem = structure_problem(job.atoms)
    if problem:
        return OracleRelaxFailure(f"invalid structure: {problem}", 0, 0.0)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        _claim(directory, digest, job.atoms, job)
        done = _read_back(directory / RESULT, job, digest)
        if done is not None:
            return done
        calls, prior_wall = _checkpoint_cost(directory, digest)
        return _relax(job, directory, digest, t0, prior_wall, calls)
    except Exception as exc_:  # a failed relaxation is an outcome, never the campaign's end
        exc = exc_
    # state.json counts each evaluation before it starts: the failed one included
    calls = max(calls, _checkpoint_cost(directory, digest)[0])
    reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
    total = wall()
    try:
        _write_json(directory / STATE, {"digest": digest, "calls": calls, "wall_time": total})
        _write_json(
            directory / FAILURE,
            {
                "digest": digest,
                "reason": reason,
                "calls": calls,
                "wall_time": total,
                "traceback": "".join(traceback.format_exception(exc))[-4000:],
            },
        )
    except OSError:
        pass
    return OracleRelaxFailure(reason, calls, total)


def _relax(
    job: _RelaxJob, directory: Path, digest: str, t0: float, prior_wall: float, calls: int
) -> OracleRelaxation:
    from ase.filters import FrechetCellFilter
    from ase.io.trajectory import Trajectory

    def wall() -> float:
        return prior_wall + time.perf_counter() - t0

    traj_path, hess_path = directory / TRAJECTORY, directory / HESSIAN
    (directory / RESULT).unlink(missing_ok=True)  # answered a smaller request: continue
    prepared = job.spec.prepare(job.atoms)
    start = Atoms(
        numbers=prepared.numbers, positions=prepared.positions, cell=prepared.cell.array, pbc=True
    )
    n = len(start)
    frames = read_frames(traj_path, n)
    calls = max(calls, len(frames))
    if frames:
        last = frames[-1]
        atoms = _snapshot(
            last,
            last.calc.results["energy"],
            last.calc.results["free_energy"],
            last.calc.results["forces"],
            last.calc.results["stress"],
        )
        _write_frames_atomic(traj_path, frames)  # append after whole frames only
        done = len(frames) - 1
        if not _hessian_fits(hess_path, 3 * (n + 3), done):
            hess_path.unlink(missing_ok=True)
    else:
        atoms = start.copy()
        traj_path.unlink(missing_ok=True)
        hess_path.unlink(missing_ok=True)
        done = 0
    filt = FrechetCellFilter(atoms, scalar_pressure=job.pressure_gpa * GPA)
    filt.orig_cell = start.cell.array  # strain coordinates relative to the input cell
    opt = _make_bfgs(filt, hess_path, directory / "relax.log")
    opt.fmax = job.fmax
    opt.nsteps = done

    calc = None
    info: JobInfo | None = None
    fresh = not frames  # the current point still needs an evaluation
    with Trajectory(str(traj_path), "a") as traj:
        while True:
            if fresh:
                if calc is None:
                    run = 1 + sum(1 for p in directory.glob("run-*") if p.is_dir())
                    info = JobInfo(key=job.key, attempt=run, directory=directory / f"run-{run}")
                    info.directory.mkdir(parents=True, exist_ok=True)
                    job.spec.preflight(job.params)
                    calc = job.spec.make_calculator(start.copy(), job.params, info)
                assert info is not None  # set together with calc
                calls += 1  # saved before the evaluation: a kill during it still counts
                _write_json(
                    directory / STATE, {"digest": digest, "calls": calls, "wall_time": wall()}
                )
                snap = _evaluate(job.spec, calc, atoms, info)
                atoms.calc = snap.calc
                traj.write(snap)
            gradient = opt.optimizable.get_gradient()
            if fresh:
                opt.log(gradient)
            fresh = True
            if opt.gradient_converged(gradient):
                status = OracleRelaxStatus.CONVERGED
                break
            if opt.nsteps >= job.max_steps:
                status = OracleRelaxStatus.MAX_STEPS
                break
            if job.max_time_s is not None and wall() >= job.max_time_s:
                status = OracleRelaxStatus.TIME_LIMIT
                break
            opt.step()  # moves the geometry, writes the Hessian (tagged with this step)
            opt.nsteps += 1
    res = atoms.calc.results
    stress = np.asarray(res["stress"], float)
    if stress.shape != (3, 3):
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = voigt_6_to_full_3x3_stress(stress)
    result = OracleRelaxation(
        atoms=Atoms(
            numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True
        ),
        energy=float(res["free_energy"]),
        energy_zero=float(res["energy"]),
        forces=np.array(res["forces"], float),
        stress=stress,
        steps=int(opt.nsteps),
        calls=calls,
        status=status,
        wall_time=wall(),
    )
    fmax_reached = float(opt.optimizable.gradient_norm(gradient))
    _write_json(
        directory / STATE, {"digest": digest, "calls": calls, "wall_time": result.wall_time}
    )
    _write_json(directory / RESULT, _result_record(result, digest, fmax_reached))
    return result


# -- the entry point --------------------------------------------------------------------


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
    """Relax each structure with the oracle's calculator (BFGS on a ``FrechetCellFilter``
    at ``pressure_gpa``) in ``oracle.workdir / "final-relax" / key``; one outcome per
    structure, in input order. ``keys`` name the job folders: the same key must mean the
    same structure for a resume to continue it (another input in a folder starts afresh).
    ``max_time_s``: wall seconds per structure over all its runs (None = no limit)."""
    if len(keys) != len(structures):
        raise ValueError(f"{len(keys)} keys for {len(structures)} structures")
    for key in keys:
        if not key or "/" in key or os.sep in key or key.startswith("."):
            raise ValueError(f"job key {key!r} must be a plain directory name")
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be distinct (one folder per structure)")
    if not fmax > 0:
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax}")
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if max_time_s is not None and not max_time_s > 0:
        raise ValueError(f"max_time_s must be > 0 seconds or None, got {max_time_s}")
    root = oracle.workdir / RELAX_DIR
    items = [
        _RelaxJob(
            oracle.spec,
            oracle.params,
            a,
            k,
            str(root / k),
            float(pressure_gpa),
            float(fmax),
            int(max_steps),
            None if max_time_s is None else float(max_time_s),
        )
        for a, k in zip(structures, keys, strict=True)
    ]
    out: list[OracleRelaxation | OracleRelaxFailure | None] = [None] * len(items)
    for res in executor.map_unordered(_relax_job, items):
        if res.ok:
            out[res.index] = res.value
        else:  # the worker itself failed (died, lost): what the checkpoint says it spent
            item = items[res.index]
            digest = input_digest(item.atoms, item.pressure_gpa, item.spec, item.params)
            calls, wall = _checkpoint_cost(Path(item.directory), digest)
            out[res.index] = OracleRelaxFailure(
                f"{type(res.error).__name__}: {res.error}".strip()[:2000], calls, wall
            )
    return [
        r if r is not None else OracleRelaxFailure("the executor returned no result", 0, 0.0)
        for r in out
    ]
