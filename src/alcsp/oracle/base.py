"""The oracle interface: label structures with reference energies, forces and stresses.

An oracle maps a list of ASE ``Atoms`` to one outcome per structure: a ``Label``
(energy eV, forces [n, 3] eV/Å, stress [3, 3] eV/Å³ in the ASE sign convention) or a
``LabelFailure`` (SCF not converged, crash, timeout, missing binary, ...). A failure is a
recorded outcome: it never stops a campaign and never enters a training set.

``check_oracle`` is the contract every oracle passes in the tests: shapes, finiteness,
forces consistent with the energy by finite differences, symmetric stress (optionally
checked against a finite strain), invariance to a rigid translation, well-formed failures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from ase import Atoms


class FailureKind(StrEnum):
    """Why an oracle could not label a structure."""

    SCF_NOT_CONVERGED = "scf_not_converged"
    CRASH = "crash"  # the code raised or the process died
    TIMEOUT = "timeout"  # killed after the per-job time limit
    MISSING_BINARY = "missing_binary"  # the executable (pw.x, vasp_std) is not installed
    INVALID_STRUCTURE = "invalid_structure"  # the input cannot be computed (empty, NaN, ...)
    INVALID_RESULT = "invalid_result"  # the code returned NaN/inf or wrongly shaped arrays
    WORKER_LOST = "worker_lost"  # the executor lost the worker running the job


@dataclass(frozen=True)
class Label:
    """A successful single-point calculation.

    Two energies, as ASE names them: ``energy`` is the force-consistent free energy
    F = E - TS (ASE's ``free_energy``), the one the forces and stress are derivatives of and
    what a potential is trained on; ``energy_zero`` is the energy extrapolated to zero
    smearing (ASE's ``energy``; GPAW's E0, VASP's "energy sigma->0"), the better estimate
    of the T = 0 ground-state energy and what every hull uses. For a code without smearing
    (EMT, ML teachers) both are the same number; ``energy_zero=None`` means that.
    With 0.1 eV Fermi-Dirac smearing, -TS is ~ -20 meV/atom for a metal and ~0 for an
    insulator: a hull of F leans towards metals, a hull of E0 does not.
    """

    energy: float  # eV, force-consistent free energy F
    forces: np.ndarray  # [n, 3] eV/Å
    stress: np.ndarray  # [3, 3] eV/Å³, ASE sign (positive = tensile)
    oracle: str
    wall_time: float  # s, all attempts together
    attempts: int = 1
    energy_zero: float | None = None  # eV, zero-smearing energy E0; None = same as energy

    @property
    def ok(self) -> Literal[True]:  # Literal: ``if result.ok`` narrows a LabelResult
        return True

    @property
    def hull_energy(self) -> float:
        """The energy every hull uses: E0 (zero smearing) where the code gives it."""
        return self.energy if self.energy_zero is None else self.energy_zero


@dataclass(frozen=True)
class LabelFailure:
    """A recorded failed calculation: why, and how long it took to fail."""

    kind: FailureKind
    reason: str
    oracle: str
    wall_time: float = 0.0  # s, all attempts together
    attempts: int = 1

    @property
    def ok(self) -> Literal[False]:
        return False


LabelResult = Label | LabelFailure


@runtime_checkable
class Oracle(Protocol):
    """Anything that labels structures. ``keys`` name the jobs (e.g. working directories);
    the same key must always mean the same structure."""

    name: str

    def label(
        self, atoms_list: Sequence[Atoms], keys: Sequence[str] | None = None
    ) -> list[LabelResult]: ...


def validate_label(result: LabelResult, n_atoms: int) -> LabelResult:
    """Turn a label with wrong shapes or non-finite numbers into an ``INVALID_RESULT`` failure."""
    if isinstance(result, LabelFailure):
        return result
    problems = []
    if not math.isfinite(result.energy):
        problems.append(f"energy is {result.energy}")
    if result.energy_zero is not None and not math.isfinite(result.energy_zero):
        problems.append(f"zero-smearing energy is {result.energy_zero}")
    if result.forces.shape != (n_atoms, 3):
        problems.append(f"forces have shape {result.forces.shape}, expected ({n_atoms}, 3)")
    elif not np.all(np.isfinite(result.forces)):
        problems.append("forces contain NaN/inf")
    if result.stress.shape != (3, 3):
        problems.append(f"stress has shape {result.stress.shape}, expected (3, 3)")
    elif not np.all(np.isfinite(result.stress)):
        problems.append("stress contains NaN/inf")
    if not problems:
        return result
    return LabelFailure(
        kind=FailureKind.INVALID_RESULT,
        reason="; ".join(problems),
        oracle=result.oracle,
        wall_time=result.wall_time,
        attempts=result.attempts,
    )


class OracleContractError(AssertionError):
    """An oracle broke the contract checked by ``check_oracle``."""


@dataclass(frozen=True)
class ContractTolerances:
    """Tolerances of ``check_oracle``; loosen them for noisy codes (SCF, grids)."""

    fd_step: float = 2e-3  # Å, displacement for finite-difference forces
    force_atol: float = 2e-2  # eV/Å, |F - F_fd|
    force_rtol: float = 2e-2  # relative to |F|
    strain_step: float = 1e-3  # dimensionless, for finite-difference stress
    stress_atol: float = 2e-4  # eV/Å³ (0.03 GPa)
    stress_rtol: float = 2e-2
    symmetry_atol: float = 1e-6  # eV/Å³, |sigma - sigma^T|
    translation_energy_atol: float = 1e-4  # eV per atom
    translation_force_atol: float = 1e-3  # eV/Å


def check_failure(result: LabelFailure) -> None:
    """A failure must name its kind, give a non-empty reason and a non-negative time."""
    if not isinstance(result.kind, FailureKind):
        raise OracleContractError(f"failure kind {result.kind!r} is not a FailureKind")
    if not isinstance(result.reason, str) or not result.reason.strip():
        raise OracleContractError(f"failure of kind {result.kind.value} has an empty reason")
    if not (result.wall_time >= 0 and math.isfinite(result.wall_time)):
        raise OracleContractError(f"failure wall_time {result.wall_time} is not a duration")
    if result.attempts < 1:
        raise OracleContractError(f"failure attempts {result.attempts} < 1")


def _labels_or_raise(oracle: Oracle, atoms_list: Sequence[Atoms], what: str) -> list[Label]:
    results = oracle.label(list(atoms_list))
    if len(results) != len(atoms_list):
        raise OracleContractError(
            f"{oracle.name}: {len(results)} results for {len(atoms_list)} structures ({what})"
        )
    out = []
    for k, r in enumerate(results):
        if isinstance(r, LabelFailure):
            check_failure(r)
            raise OracleContractError(
                f"{oracle.name} failed on {what} structure {k}: {r.kind.value}: {r.reason}"
            )
        if not isinstance(r, Label):
            raise OracleContractError(f"{oracle.name} returned {type(r).__name__}, not a Label")
        out.append(r)
    return out


def _strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """A copy deformed by the symmetric strain ``eps`` [3, 3] (positions move with the cell)."""
    a = atoms.copy()
    a.calc = None
    deform = np.eye(3) + eps
    a.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    return a


def check_oracle(
    oracle: Oracle,
    atoms_list: Sequence[Atoms],
    *,
    rng: np.random.Generator,
    tol: ContractTolerances = ContractTolerances(),
    check_stress_fd: bool = True,
    n_fd_components: int = 2,
) -> list[Label]:
    """Check the oracle contract on ``atoms_list``; return the labels or raise.

    Checks, per structure: one result per input, shapes [n, 3] and [3, 3], finite values,
    a symmetric stress, the ``oracle`` name, a non-negative wall time. On the first
    structure: ``n_fd_components`` random force components against a central finite
    difference of the energy, the same number of stress components against a finite strain
    (``check_stress_fd``; turn off for plane-wave codes at an unconverged cutoff, whose
    analytic stress omits the Pulay term), and invariance of energy and forces under a
    random rigid translation. Costs ``1 + 1 + 2 * n_fd_components * (1 + check_stress_fd)``
    extra oracle calls on the first structure.
    """
    if not atoms_list:
        raise ValueError("check_oracle needs at least one structure")
    labels = _labels_or_raise(oracle, atoms_list, "input")
    for k, (a, lab) in enumerate(zip(atoms_list, labels, strict=True)):
        n = len(a)
        where = f"{oracle.name}, structure {k}"
        if lab.forces.shape != (n, 3) or lab.stress.shape != (3, 3):
            raise OracleContractError(
                f"{where}: forces {lab.forces.shape} / stress {lab.stress.shape}, "
                f"expected ({n}, 3) / (3, 3)"
            )
        finite = (
            math.isfinite(lab.energy)
            and np.isfinite(lab.forces).all()
            and np.isfinite(lab.stress).all()
        )
        if not finite:
            raise OracleContractError(f"{where}: non-finite energy, forces or stress")
        asym = np.abs(lab.stress - lab.stress.T).max()
        if asym > tol.symmetry_atol:
            raise OracleContractError(f"{where}: stress not symmetric (max |s - s^T| = {asym:g})")
        if lab.oracle != oracle.name:
            raise OracleContractError(f"{where}: label says oracle {lab.oracle!r}")
        if not (lab.wall_time >= 0):
            raise OracleContractError(f"{where}: wall_time {lab.wall_time} is not a duration")

    a0, lab0 = atoms_list[0], labels[0]
    n0 = len(a0)
    # Finite-difference forces: F_ia = -(E(x + h) - E(x - h)) / 2h.
    comps = [(int(rng.integers(n0)), int(rng.integers(3))) for _ in range(n_fd_components)]
    displaced = []
    for i, c in comps:
        for sign in (1.0, -1.0):
            d = a0.copy()
            d.calc = None
            pos = d.get_positions()
            pos[i, c] += sign * tol.fd_step
            d.set_positions(pos)
            displaced.append(d)
    # Finite-difference stress: sigma_ab = (1/V) dE/d eps_ab for a symmetric strain.
    strain_comps = [tuple(sorted(rng.choice(3, size=2))) for _ in range(n_fd_components)]
    strained = []
    if check_stress_fd:
        for a, b in strain_comps:
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * sign * tol.strain_step
                eps[b, a] += 0.5 * sign * tol.strain_step
                strained.append(_strained(a0, eps))
    shift = rng.normal(size=3)
    moved = a0.copy()
    moved.calc = None
    moved.translate(shift)
    extra = _labels_or_raise(oracle, [*displaced, *strained, moved], "derived")

    fd = extra[: len(displaced)]
    for m, (i, c) in enumerate(comps):
        f_fd = -(fd[2 * m].energy - fd[2 * m + 1].energy) / (2 * tol.fd_step)
        f = lab0.forces[i, c]
        if abs(f - f_fd) > tol.force_atol + tol.force_rtol * abs(f):
            raise OracleContractError(
                f"{oracle.name}: force on atom {i} axis {c} is {f:.5f} eV/Å but the finite "
                f"difference of the energy gives {f_fd:.5f} eV/Å"
            )
    if check_stress_fd:
        st = extra[len(displaced) : len(displaced) + len(strained)]
        vol = a0.get_volume()
        for m, (a, b) in enumerate(strain_comps):
            s_fd = (st[2 * m].energy - st[2 * m + 1].energy) / (2 * tol.strain_step * vol)
            s = lab0.stress[a, b]
            if abs(s - s_fd) > tol.stress_atol + tol.stress_rtol * abs(s):
                raise OracleContractError(
                    f"{oracle.name}: stress[{a},{b}] is {s:.6f} eV/Å³ but the finite strain "
                    f"gives {s_fd:.6f} eV/Å³ (sign convention or units wrong?)"
                )
    tr = extra[-1]
    de = abs(tr.energy - lab0.energy) / n0
    df = np.abs(tr.forces - lab0.forces).max()
    if de > tol.translation_energy_atol or df > tol.translation_force_atol:
        raise OracleContractError(
            f"{oracle.name}: a rigid translation changed the energy by {de:.2e} eV/atom "
            f"and the forces by {df:.2e} eV/Å"
        )
    return labels
