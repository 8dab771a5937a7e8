"""A generic oracle over an ASE calculator: one working directory per job, a time limit,
and retries with parameter overrides.

Layout under the caller's ``workdir``::

    workdir/<key>/attempt-1/input.extxyz    the structure sent to the code
                            job.pkl         spec + parameters (isolated mode)
                            result.json     energy/forces/stress or the failure
                            output.extxyz   the structure with its results
                            stdout.log, stderr.log, and the code's own files
    workdir/<key>/outcome.json              the final outcome over all attempts

In isolated mode (the default for DFT codes) each attempt runs in a fresh Python process
(``python -m alcsp.oracle._job DIR``) in its own process group, so a hung calculation, and
any MPI or Fortran children it started, can be killed at the time limit and a segfault
cannot take the campaign down; the group also dies with the process that started it.
In-process mode skips the ~0.5 s process start for cheap oracles (EMT, CHGNet) and has no
time limit.

A finished job is not redone: when ``outcome.json`` exists for the same input, it is read
back (a campaign killed after a calculation but before its database commit loses nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from alcsp.oracle.base import FailureKind, Label, LabelFailure, LabelResult, validate_label

JOB_PARENT_ENV = "ALCSP_JOB_PARENT"  # alcsp.oracle._job.PARENT_ENV


class SCFNotConverged(RuntimeError):
    """Raised by a spec when the code finished without a converged SCF."""


class MissingBinary(RuntimeError):
    """Raised by a spec when the executable it needs is not installed."""


@dataclass(frozen=True)
class JobInfo:
    """Where and which attempt a calculation runs."""

    key: str
    attempt: int  # 1-based
    directory: Path
    isolated: bool = False  # running in its own process (python -m alcsp.oracle._job)


def kpts_from_spacing(atoms: Atoms, spacing: float) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with at most ``spacing`` × 2π Å⁻¹ between k-points.

    ``spacing`` = 0.03 is the paper's 2π × 0.03 Å⁻¹ for SCF calculations:
    n_i = ceil(|b_i| / spacing) with b_i the reciprocal vectors without the 2π.
    """
    if not spacing > 0:
        raise ValueError(f"k-point spacing must be > 0 (in 2π/Å), got {spacing}")
    rec = atoms.cell.reciprocal()  # [3, 3] rows b_i / 2π, Å⁻¹
    lengths = np.linalg.norm(rec, axis=1)
    n1, n2, n3 = (max(1, math.ceil(float(b) / spacing - 1e-9)) for b in lengths)
    return n1, n2, n3


class CalculatorSpec:
    """How to build and run one ASE calculator. Subclass per code.

    ``Params`` is a frozen dataclass of the code's settings (validated by ``make_oracle``);
    ``default_retries`` are the parameter overrides tried after a failed first attempt.
    Specs are pickled into isolated jobs: keep them small and import codes lazily.
    """

    name: ClassVar[str] = "?"
    Params: ClassVar[type] = dataclasses.make_dataclass("NoParams", [], frozen=True)
    default_retries: ClassVar[tuple[Mapping[str, Any], ...]] = ()
    default_isolate: ClassVar[bool] = True

    def preflight(self, params: Any) -> None:
        """Raise ``MissingBinary`` (with the fix) when the code cannot run here."""

    def make_calculator(self, atoms: Atoms, params: Any, job: JobInfo) -> BaseCalculator:
        raise NotImplementedError

    def check_converged(self, calc: BaseCalculator, job: JobInfo) -> None:
        """Raise ``SCFNotConverged`` when the code finished unconverged without raising."""

    def classify(self, exc: BaseException, job: JobInfo) -> FailureKind:
        """Map an exception from a calculation to a failure kind."""
        if isinstance(exc, SCFNotConverged):
            return FailureKind.SCF_NOT_CONVERGED
        if isinstance(exc, MissingBinary):
            return FailureKind.MISSING_BINARY
        names = {c.__name__ for c in type(exc).__mro__}
        if "ConvergenceError" in names or "not converge" in str(exc).lower():
            return FailureKind.SCF_NOT_CONVERGED
        return FailureKind.CRASH

    def prepare(self, atoms: Atoms) -> Atoms:
        """The structure as the code should see it (the same crystal, e.g. in a better-
        conditioned cell basis); identity by default. Used by single points and by the
        oracle relaxation alike."""
        return atoms

    def env(self, params: Any) -> dict[str, str]:
        """Extra environment variables for an isolated job (e.g. VASP_PP_PATH)."""
        return {}

    def compute(self, atoms: Atoms, params: Any, job: JobInfo) -> Computed:
        """Energies, forces and stress of one structure."""
        self.preflight(params)
        a = atoms.copy()
        a.calc = self.make_calculator(a, params, job)
        a.get_potential_energy()
        forces = np.array(a.get_forces(), dtype=float)
        stress = np.array(a.get_stress(voigt=False), dtype=float)
        self.check_converged(a.calc, job)
        free, zero = energies_of(a.calc)
        return Computed(free, zero, forces, stress)


@dataclass(frozen=True)
class Computed:
    """What one calculation gives: the force-consistent free energy F (eV), the
    zero-smearing energy E0 (eV), forces [n, 3] eV/Å and stress [3, 3] eV/Å³."""

    energy: float
    energy_zero: float
    forces: np.ndarray
    stress: np.ndarray


def energies_of(calc: BaseCalculator) -> tuple[float, float]:
    """(F, E0) from a calculator that has run: ASE's ``free_energy`` (force-consistent) and
    ``energy`` (extrapolated to zero smearing). A code that reports one of them gives both
    the same value."""
    results = calc.results
    if "energy" not in results and "free_energy" not in results:
        raise RuntimeError(f"{type(calc).__name__} returned no energy")
    zero = float(results.get("energy", results.get("free_energy")))
    free = float(results.get("free_energy", zero))
    return free, zero


def structure_key(atoms: Atoms) -> str:
    """A short content hash of a structure, used as the job key when the caller gives none."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    return "h" + h.hexdigest()[:20]


def structure_problem(atoms: Atoms) -> str:
    """Why no code can compute ``atoms`` ("" when it is fine).

    A light check (no torch import, unlike ``alcsp.structures.validate_atoms``): oracle
    workers should not pay seconds of imports to look at a structure.
    """
    if len(atoms) == 0:
        return "the structure is empty (0 atoms)"
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        return "the structure has non-finite (NaN/inf) positions or cell"
    if not all(atoms.pbc):
        return f"the structure is not periodic in 3D (pbc={list(atoms.pbc)})"
    if abs(atoms.cell.volume) / len(atoms) < 1e-3:
        return f"the cell has (near) zero volume ({abs(atoms.cell.volume):.3g} Å³)"
    return ""


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def run_attempt(spec: CalculatorSpec, atoms: Atoms, params: Any, job: JobInfo) -> dict:
    """Run one attempt in this process; return the result record written to result.json."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    t0 = time.perf_counter()
    try:
        got = spec.compute(atoms, params, job)
        out = atoms.copy()
        out.calc = SinglePointCalculator(
            out,
            energy=got.energy_zero,
            free_energy=got.energy,
            forces=got.forces,
            stress=got.stress,
        )
        write(job.directory / "output.extxyz", out)
        rec = {
            "ok": True,
            "energy": got.energy,
            "energy_zero": got.energy_zero,
            "forces": got.forces.tolist(),
            "stress": got.stress.tolist(),
        }
    except Exception as exc:  # any failure of the code is a recorded outcome
        rec = {
            "ok": False,
            "kind": spec.classify(exc, job).value,
            "reason": f"{type(exc).__name__}: {exc}".strip()[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
    rec["wall_time"] = time.perf_counter() - t0
    _write_json_atomic(job.directory / "result.json", rec)
    return rec


def _tail(path: Path, n: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


class ASEOracle:
    """An ``Oracle`` over a ``CalculatorSpec``, with job directories, time limit and retries.

    ``retries`` are parameter overrides for attempts 2, 3, ...; an attempt is retried only
    when its failure kind is in ``retry_on``. ``timeout_s`` needs ``isolate=True``.
    """

    def __init__(
        self,
        spec: CalculatorSpec,
        params: Any,
        workdir: str | os.PathLike,
        *,
        timeout_s: float | None = None,
        retries: Sequence[Mapping[str, Any]] = (),
        retry_on: Sequence[FailureKind] = (FailureKind.SCF_NOT_CONVERGED, FailureKind.CRASH),
        isolate: bool = True,
        reuse_results: bool = True,
    ):
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds or None, got {timeout_s}")
        if timeout_s is not None and not isolate:
            raise ValueError(
                "a time limit needs isolate=True (a calculation in this process cannot be "
                "killed); set isolate=True or timeout_s=None"
            )
        self.spec = spec
        self.name = spec.name
        self.params = params
        # Absolute: an isolated job runs with its own folder as working directory, where a
        # path relative to the campaign's would point nowhere.
        self.workdir = Path(workdir).absolute()
        self.timeout_s = timeout_s
        self.attempt_params = [params] + [dataclasses.replace(params, **o) for o in retries]
        self.retry_on = frozenset(FailureKind(k) for k in retry_on)
        self.isolate = isolate
        self.reuse_results = reuse_results

    def label(
        self, atoms_list: Sequence[Atoms], keys: Sequence[str] | None = None
    ) -> list[LabelResult]:
        if keys is None:
            keys = [structure_key(a) for a in atoms_list]
        if len(keys) != len(atoms_list):
            raise ValueError(f"{len(keys)} keys for {len(atoms_list)} structures")
        return [self.label_one(a, k) for a, k in zip(atoms_list, keys, strict=True)]

    def label_one(self, atoms: Atoms, key: str) -> LabelResult:
        """Label one structure in ``workdir/key`` (reusing a finished outcome there)."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"job key {key!r} must be a plain directory name")
        jobdir = self.workdir / key
        jobdir.mkdir(parents=True, exist_ok=True)
        digest = structure_key(atoms)
        outcome_path = jobdir / "outcome.json"
        if self.reuse_results and outcome_path.exists():
            cached = self._read_outcome(outcome_path, digest, len(atoms))
            if cached is not None:
                return cached
        problem = structure_problem(atoms)
        if problem:
            result: LabelResult = LabelFailure(FailureKind.INVALID_STRUCTURE, problem, self.name)
            self._write_outcome(outcome_path, digest, result)
            return result
        total = 0.0
        for attempt, params in enumerate(self.attempt_params, start=1):
            job = JobInfo(
                key=key,
                attempt=attempt,
                directory=jobdir / f"attempt-{attempt}",
                isolated=self.isolate,
            )
            job.directory.mkdir(parents=True, exist_ok=True)
            rec = (
                self._run_isolated(atoms, params, job)
                if self.isolate
                else (self._run_inline(atoms, params, job))
            )
            total += rec["wall_time"]
            result = self._to_result(rec, attempt, total, len(atoms))
            if result.ok or result.kind not in self.retry_on:
                break
        self._write_outcome(outcome_path, digest, result)
        return result

    # -- attempts ---------------------------------------------------------------------

    def _run_inline(self, atoms: Atoms, params: Any, job: JobInfo) -> dict:
        from ase.io import write

        write(job.directory / "input.extxyz", atoms)
        return run_attempt(self.spec, atoms, params, job)

    def _run_isolated(self, atoms: Atoms, params: Any, job: JobInfo) -> dict:
        from ase.io import write

        write(job.directory / "input.extxyz", atoms)
        result_path = job.directory / "result.json"
        result_path.unlink(missing_ok=True)
        with open(job.directory / "job.pkl", "wb") as f:
            pickle.dump({"spec": self.spec, "params": params, "atoms": atoms, "job": job}, f)
        env = dict(os.environ)
        # The child must import what the parent imported the spec from.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(self.spec.env(params))
        # The job dies with this process, and takes its group (the code's own children)
        # with it: see alcsp.oracle._job. This thread waits for it, so the parent-death
        # signal, which follows the thread that started the job, fires only when this
        # process dies.
        env[JOB_PARENT_ENV] = str(os.getpid())
        t0 = time.perf_counter()
        with (
            open(job.directory / "stdout.log", "wb") as out,
            open(job.directory / "stderr.log", "wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-m", "alcsp.oracle._job", str(job.directory)],
                cwd=job.directory,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # own process group: kill the code's children too
            )
            try:
                rc = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return {
                    "ok": False,
                    "kind": FailureKind.TIMEOUT.value,
                    "reason": f"killed after the time limit of {self.timeout_s:g} s "
                    "(raise [oracle] timeout_s if such jobs should finish)",
                    "wall_time": time.perf_counter() - t0,
                }
            finally:
                if proc.poll() is None:  # interrupted (KeyboardInterrupt): leave no orphan
                    _kill_group(proc)
        wall = time.perf_counter() - t0
        if result_path.exists():
            rec = json.loads(result_path.read_text())
            rec["wall_time"] = wall
            return rec
        how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        return {
            "ok": False,
            "kind": FailureKind.CRASH.value,
            "reason": f"job process died with {how} before writing a result; stderr: "
            f"{_tail(job.directory / 'stderr.log')}",
            "wall_time": wall,
        }

    def _to_result(self, rec: dict, attempt: int, total: float, n_atoms: int) -> LabelResult:
        if rec["ok"]:
            lab = Label(
                energy=float(rec["energy"]),
                forces=np.asarray(rec["forces"], dtype=float).reshape(-1, 3),
                stress=np.asarray(rec["stress"], dtype=float).reshape(3, 3),
                oracle=self.name,
                wall_time=total,
                attempts=attempt,
                energy_zero=_optional_float(rec.get("energy_zero")),
            )
            return validate_label(lab, n_atoms)
        return LabelFailure(
            kind=FailureKind(rec["kind"]),
            reason=rec["reason"],
            oracle=self.name,
            wall_time=total,
            attempts=attempt,
        )

    # -- outcomes on disk -------------------------------------------------------------

    def _write_outcome(self, path: Path, digest: str, result: LabelResult) -> None:
        rec: dict[str, Any] = {
            "input": digest,
            "oracle": self.name,
            "ok": result.ok,
            "wall_time": result.wall_time,
            "attempts": result.attempts,
        }
        if isinstance(result, Label):
            rec |= {
                "energy": result.energy,
                "energy_zero": result.energy_zero,
                "forces": result.forces.tolist(),
                "stress": result.stress.tolist(),
            }
        else:
            rec |= {"kind": result.kind.value, "reason": result.reason}
        _write_json_atomic(path, rec)

    def _read_outcome(self, path: Path, digest: str, n_atoms: int) -> LabelResult | None:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("input") != digest or rec.get("oracle") != self.name:
            return None  # a different structure or code used this key: recompute
        return self._to_result(rec, rec["attempts"], rec["wall_time"], n_atoms)

    def __repr__(self) -> str:
        return (
            f"ASEOracle({self.name}, workdir={str(self.workdir)!r}, "
            f"timeout_s={self.timeout_s}, attempts={len(self.attempt_params)}, "
            f"isolate={self.isolate})"
        )


def _optional_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
