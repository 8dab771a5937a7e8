"""Relax many structures with in-flight batching: finished ones leave, pending ones join.

The batch holds at most ``RelaxConfig.atoms_budget`` atoms (and ``hessian_mb`` of inverse
Hessians); every step evaluates the whole batch with one potential call. A structure leaves
the batch the step it converges, reaches the step cap, or turns unphysical, and the next
pending structures take its place, so the batch stays full until the queue runs dry.
Results come back in input order, every structure with a status; unconverged and
unphysical ones keep their last geometry (the active-learning loop labels exactly those).
With ``RelaxConfig.frame_interval`` k > 0 each result also holds trajectory frames: the
geometry at step 0, every k-th step and the end, copied (only the structures due one, on the
CPU) as the batch steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from alcsp.potential.base import BatchedPotential
from alcsp.relax.bfgs import STATE_DTYPE, StepOutput, bfgs_init, bfgs_step
from alcsp.relax.checks import describe, min_distance_ratio
from alcsp.relax.config import Code, RelaxConfig, status_name
from alcsp.relax.state import BFGSState, concat, select
from alcsp.structures import StructureBatch
from alcsp.units import GPA
from alcsp.vocab import RelaxStatus

#: Frames kept while a structure relaxes: (step, positions [n, 3] Å, cell [3, 3] Å).
_Frame = tuple[int, np.ndarray, np.ndarray]

#: Keys written into ``RelaxResult.atoms.info``.
INFO_KEYS = (
    "relax_status",
    "relax_reason",
    "relax_steps",
    "enthalpy_per_atom",
    "pressure_gpa",
    "volume_per_atom",
)


@dataclass
class RelaxResult:
    """The outcome of relaxing one structure.

    ``atoms`` is the final geometry with a ``SinglePointCalculator`` holding the potential's
    energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign) there, and ``info`` keys
    ``INFO_KEYS``. ``status`` is "converged", "max_steps" or "unphysical"; ``reason`` says why
    (for converged ones: the residual force, stress and enthalpy change).

    ``frames``: with ``RelaxConfig.frame_interval`` k > 0, the geometries (no calculator) at
    step 0, every k-th step and the last step, each with ``info["relax_step"]``; the last one
    is the geometry of ``atoms``. Empty when k = 0.
    """

    atoms: Atoms
    status: str
    reason: str
    energy: float  # eV, total
    enthalpy: float  # eV/atom, (E + P V) / N
    volume: float  # Å³/atom
    pressure: float  # GPa, the target
    steps: int
    fmax: float  # eV/Å, largest force component
    stress_residual: float  # GPa, largest |sigma + P I| component (0 for fixed cell)
    frames: tuple[Atoms, ...] = ()

    @property
    def converged(self) -> bool:
        return self.status == RelaxStatus.CONVERGED


def _pressures(pressure: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Per-structure pressures in GPa, validated."""
    p = np.asarray(pressure, dtype=float)
    if p.ndim == 0:
        p = np.full(n, float(p))
    if p.shape != (n,):
        raise ValueError(
            f"pressure must be one number or one per structure ({n}), got shape {p.shape}."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("pressure must be finite (GPa); got NaN or inf.")
    return p


def relax_iter(
    structures: Sequence[Atoms] | StructureBatch,
    potential: BatchedPotential,
    pressure: float | Sequence[float] | np.ndarray = 0.0,
    config: RelaxConfig | None = None,
) -> Iterator[tuple[int, RelaxResult]]:
    """Relax ``structures``, yielding ``(input index, result)`` as each one finishes.

    pressure: GPa, one value or one per structure. Streaming results lets a campaign store
    each relaxation the moment it ends.
    """
    config = config or RelaxConfig()
    if not isinstance(config, RelaxConfig):
        raise TypeError(f"config must be a RelaxConfig, got {type(config).__name__}")
    atoms_in: Sequence[Atoms] | None
    if isinstance(structures, StructureBatch):
        full = structures.to(device=potential.device, dtype=STATE_DTYPE)
        atoms_in = None
    else:
        atoms_in = list(structures)
        if not atoms_in:
            return
        full = StructureBatch.from_atoms(atoms_in, dtype=STATE_DTYPE, device=potential.device)
    total = full.n_structures
    p_gpa = _pressures(pressure, total)
    p_ev = torch.as_tensor(p_gpa * GPA, dtype=STATE_DTYPE, device=potential.device)
    n_all = full.n_atoms.cpu().numpy()
    order = np.argsort(-n_all, kind="stable") if config.sort_by_size else np.arange(total)
    hess_bytes = config.hessian_mb * 2**20

    state: BFGSState | None = None
    nxt = 0
    # input index -> frames so far; None when no frames are kept (no work at all then)
    frames: dict[int, list[_Frame]] | None = {} if config.frame_interval else None
    while nxt < total or state is not None:
        # --- admit pending structures while the budgets allow ---------------------------
        s_cur = state.n_structures if state is not None else 0
        atoms_cur = int(state.n_atoms.sum()) if state is not None else 0
        rows = state.n_rows if state is not None else 3
        take: list[int] = []
        while nxt < total:
            k = int(order[nxt])
            r_new = max(rows, 3 + int(n_all[k]))
            mem = (s_cur + len(take) + 1) * (3 * r_new) ** 2 * 8
            if s_cur + len(take) > 0 and (
                atoms_cur + n_all[k] > config.atoms_budget or mem > hess_bytes
            ):
                break
            take.append(k)
            atoms_cur += int(n_all[k])
            rows = r_new
            nxt += 1
        if take:
            new = bfgs_init(full.select(take), p_ev[take], config, index=torch.tensor(take))
            state = new if state is None else concat(state, new)
        assert state is not None

        # --- one batched step ------------------------------------------------------------
        state, rep = bfgs_step(state, potential, config)
        code = rep.code.clone()  # [S]
        state, close = _distance_checks(state, rep, code, config)
        finished = code != 0  # [S]
        if frames is not None:
            _record_frames(frames, state, rep, finished, config.frame_interval)
        if not bool(finished.any()):
            continue
        yield from _results(state, rep, code, close, finished, p_gpa, atoms_in, config, frames)
        keep = ~finished
        state = select(state, keep) if bool(keep.any()) else None


def relax_structures(
    structures: Sequence[Atoms] | StructureBatch,
    potential: BatchedPotential,
    pressure: float | Sequence[float] | np.ndarray = 0.0,
    config: RelaxConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RelaxResult]:
    """Relax every structure (batched BFGS, variable cell unless ``config.fixed_cell``).

    pressure: GPa, one value or one per structure. ``progress(done, total)`` is called as
    structures finish. Returns one ``RelaxResult`` per input structure, in input order.
    """
    n = structures.n_structures if isinstance(structures, StructureBatch) else len(structures)
    results: list[RelaxResult | None] = [None] * n
    done = 0
    for k, res in relax_iter(structures, potential, pressure, config):
        results[k] = res
        done += 1
        if progress is not None:
            progress(done, n)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _distance_checks(
    state: BFGSState, rep: StepOutput, code: torch.Tensor, config: RelaxConfig
) -> tuple[BFGSState, dict[int, tuple[float, int, int, float]]]:
    """Flag close atoms (in place on ``code``) for structures due a check or finishing.

    A structure is checked when its step count is a multiple of ``distance_check_interval``
    and whenever it finishes (unless its numbers are non-finite). A finishing structure with
    a close pair is unphysical; a running one when ``close_contact_patience`` consecutive
    checks found one. Returns the state with updated strike counts and {slot: details} of
    the structures flagged.
    """
    if config.min_distance_fraction <= 0:
        return state, {}
    due = ((rep.steps % config.distance_check_interval) == 0) | (code != 0)
    due &= code != Code.NON_FINITE
    slots = due.nonzero().squeeze(1).tolist()
    if not slots:
        return state, {}
    pos = rep.positions.cpu().numpy()
    cell = rep.cell.cpu().numpy()
    num = state.numbers.cpu().numpy()
    ptr = state.ptr.cpu().numpy()
    strikes = state.close_strikes.clone()  # [S]
    found = {}
    for s in slots:  # vesin works one structure at a time (see alcsp.relax.checks)
        a, b = ptr[s], ptr[s + 1]
        hit = min_distance_ratio(pos[a:b], cell[s], num[a:b], config.min_distance_fraction)
        if not math.isfinite(hit[0]):
            strikes[s] = 0
            continue
        strikes[s] += 1
        # an earlier unphysical finding (volume, cell, energy) keeps precedence
        finishing = int(code[s]) in (Code.CONVERGED, Code.MAX_STEPS)
        if finishing or (int(code[s]) == 0 and int(strikes[s]) >= config.close_contact_patience):
            found[s] = hit
            code[s] = Code.CLOSE_ATOMS
    return replace(state, close_strikes=strikes), found


def _record_frames(
    frames: dict[int, list[_Frame]],
    state: BFGSState,
    rep: StepOutput,
    finished: torch.Tensor,
    interval: int,
) -> None:
    """Keep the evaluated geometry of the structures due a frame (in place on ``frames``).

    Due: a step count that is a multiple of ``interval`` (step 0 included), or finishing now
    (the final geometry). A structure's step count grows by one per evaluation while it
    runs, so no step is kept twice. Only the due structures' positions and cells are copied.
    """
    due = ((rep.steps % interval) == 0) | finished  # [S]
    slots = due.nonzero().squeeze(1)  # [S']
    if slots.numel() == 0:
        return
    pos = rep.positions[due[state.batch]].cpu().numpy()  # [N', 3], due structures' atoms
    cell = rep.cell[slots].cpu().numpy()  # [S', 3, 3]
    ptr = np.concatenate([[0], np.cumsum(state.n_atoms[slots].cpu().numpy())])  # [S'+1]
    index = state.index[slots].tolist()
    steps = rep.steps[slots].tolist()
    for j, (k, t) in enumerate(zip(index, steps, strict=True)):
        frames.setdefault(k, []).append((t, pos[ptr[j] : ptr[j + 1]], cell[j]))


def _frame_atoms(kept: list[_Frame], numbers: np.ndarray) -> tuple[Atoms, ...]:
    """The kept frames of one structure as Atoms with ``info["relax_step"]``."""
    out = []
    for step, pos, cell in kept:
        atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
        atoms.info["relax_step"] = step
        out.append(atoms)
    return tuple(out)


def _results(
    state: BFGSState,
    rep: StepOutput,
    code: torch.Tensor,
    close: dict[int, tuple[float, int, int, float]],
    finished: torch.Tensor,
    p_gpa: np.ndarray,
    atoms_in: Sequence[Atoms] | None,
    config: RelaxConfig,
    frames: dict[int, list[_Frame]] | None = None,
) -> Iterator[tuple[int, RelaxResult]]:
    """RelaxResult for each finished structure (Python work only for the finished ones)."""
    slots = finished.nonzero().squeeze(1).tolist()
    pos = rep.positions.cpu().numpy()
    frc = rep.forces.cpu().numpy()
    cell = rep.cell.cpu().numpy()
    stress = rep.stress.cpu().numpy()
    num = state.numbers.cpu().numpy()
    ptr = state.ptr.cpu().numpy()
    cols = {
        name: getattr(rep, name).cpu().numpy()
        for name in (
            "energy",
            "enthalpy",
            "energy_change",
            "fmax",
            "stress_residual",
            "volume",
            "steps",
        )
    }
    codes = code.cpu().numpy()
    index = state.index.cpu().numpy()
    start_v = state.start_volume.cpu().numpy()
    for s in slots:
        a, b = ptr[s], ptr[s + 1]
        n = b - a
        k = int(index[s])
        lengths = np.linalg.norm(cell[s], axis=1)
        unit = cell[s] / np.maximum(lengths, 1e-12)[:, None]
        cosines = [unit[1] @ unit[2], unit[0] @ unit[2], unit[0] @ unit[1]]
        worst = max(cosines, key=abs)
        values = {
            "fmax": float(cols["fmax"][s]),
            "stress_gpa": float(cols["stress_residual"][s]) / GPA,
            "dh": float(cols["energy_change"][s]),
            "vpa": float(cols["volume"][s]) / n,
            "epa": float(cols["energy"][s]) / n,
            "lmin": float(lengths.min()),
            "lmax": float(lengths.max()),
            "angle": float(np.degrees(np.arccos(np.clip(worst, -1, 1)))),
            "ratio_v": float(cols["volume"][s] / start_v[s]),
        }
        if s in close:
            ratio, i, j, d = close[s]
            values.update(ratio=ratio, i=i, j=j, d=d)
        status = status_name(int(codes[s]))
        reason = describe(int(codes[s]), values, config)
        atoms = Atoms(numbers=num[a:b], positions=pos[a:b], cell=cell[s], pbc=True)
        if atoms_in is not None:
            atoms.info.update(atoms_in[k].info)
        enthalpy = float(cols["enthalpy"][s]) / n
        atoms.info.update(
            relax_status=status,
            relax_reason=reason,
            relax_steps=int(cols["steps"][s]),
            enthalpy_per_atom=enthalpy,
            pressure_gpa=float(p_gpa[k]),
            volume_per_atom=values["vpa"],
        )
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(cols["energy"][s]),
            forces=frc[a:b].copy(),
            stress=full_3x3_to_voigt_6_stress(stress[s]),
        )
        yield (
            k,
            RelaxResult(
                atoms=atoms,
                status=status,
                reason=reason,
                energy=float(cols["energy"][s]),
                enthalpy=enthalpy,
                volume=values["vpa"],
                pressure=float(p_gpa[k]),
                steps=int(cols["steps"][s]),
                fmax=values["fmax"],
                stress_residual=values["stress_gpa"],
                frames=_frame_atoms(frames.pop(k), num[a:b]) if frames is not None else (),
            ),
        )
