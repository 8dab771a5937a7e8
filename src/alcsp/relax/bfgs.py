"""Batched BFGS on the enthalpy H = E + P V, with Frechet cell degrees of freedom.

Shape letters as in ``alcsp.relax.state`` (S structures, N atoms, R rows, D = 3R).

One ``bfgs_step`` = one potential evaluation for the whole batch, then, per structure and
all at once (no Python loop over structures):
  1. convergence and unphysical checks at the evaluated geometry -> status code [S];
  2. the inverse-Hessian BFGS update from (s, y) = (x - x_prev, g - g_prev), skipped when the
     curvature s.y is not positive (which keeps every inverse Hessian positive definite),
     and, only if ``energy_rise_reset`` is set, replaced by a reset to I/alpha when the
     enthalpy rose by more than that (eV/atom) since the last step (off by default);
  3. the quasi-Newton step p = -Hinv g, scaled as a whole so that its largest row (an atom's
     displacement or a cell row) is at most ``max_step`` (ASE's BFGS rule).
Structures that finished (status != 0) do not move; the caller removes them.

Why the inverse Hessian: ASE's BFGS keeps the Hessian and diagonalises it every step
(O(D^3), 2-5 ms for an 80-atom cell); the inverse form needs one batched pass over H for
H·[y, g] and one rank-2 update (O(D^2)), so the optimiser stays far cheaper than the potential.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from alcsp.potential.base import BatchedPotential
from alcsp.relax.cell import deform, deformation_gradient, generalized_forces
from alcsp.relax.checks import cell_checks
from alcsp.relax.config import Code, RelaxConfig
from alcsp.relax.state import BFGSState
from alcsp.structures import StructureBatch

#: The relaxer's own arithmetic is float64 whatever the potential's dtype.
STATE_DTYPE = torch.float64


@dataclass(frozen=True)
class StepOutput:
    """What one evaluation found, at the geometry it evaluated (before the step)."""

    code: torch.Tensor  # [S] long, Code (0 = still running)
    energy: torch.Tensor  # [S] eV
    enthalpy: torch.Tensor  # [S] eV, E + P V
    energy_change: torch.Tensor  # [S] eV/atom, |H - H_prev| / n (inf at the first evaluation)
    fmax: torch.Tensor  # [S] eV/Å, largest Cartesian force component
    stress_residual: torch.Tensor  # [S] eV/Å³, largest |sigma + P I| (0 in fixed-cell mode)
    volume: torch.Tensor  # [S] Å³
    steps: torch.Tensor  # [S] long, steps taken before this evaluation
    positions: torch.Tensor  # [N, 3] Å
    cell: torch.Tensor  # [S, 3, 3] Å
    forces: torch.Tensor  # [N, 3] eV/Å
    stress: torch.Tensor  # [S, 3, 3] eV/Å³


def bfgs_init(
    batch: StructureBatch,
    pressure: torch.Tensor,
    config: RelaxConfig,
    index: torch.Tensor | None = None,
) -> BFGSState:
    """A BFGS state at the starting geometry of ``batch`` (no potential call yet).

    pressure [S] eV/Å³; index [S] long, ids carried into the results (default 0..S-1).
    The state lives on ``batch.device`` in float64.
    """
    dev = batch.device
    b = batch.to(dtype=STATE_DTYPE)
    s = b.n_structures
    n_atoms = b.n_atoms  # [S]
    n_rows = 3 + int(n_atoms.max())
    atom_batch = b.batch  # [N]
    row = 3 + torch.arange(b.positions.shape[0], device=dev) - b.ptr[:-1][atom_batch]  # [N]
    x = b.positions.new_zeros(s, n_rows, 3)  # [S, R, 3]
    x[atom_batch, row] = b.positions
    if config.exp_cell_factor is None:
        cell_factor = n_atoms.to(STATE_DTYPE)  # ASE FrechetCellFilter default
    else:
        cell_factor = torch.full((s,), float(config.exp_cell_factor), dtype=STATE_DTYPE, device=dev)
    pressure = torch.as_tensor(pressure, dtype=STATE_DTYPE, device=dev).reshape(-1)
    if pressure.shape[0] != s:
        raise ValueError(f"got {pressure.shape[0]} pressures for {s} structures")
    state = BFGSState(
        numbers=b.numbers,
        batch=atom_batch,
        row=row,
        ptr=b.ptr,
        n_atoms=n_atoms,
        index=(
            torch.arange(s, device=dev)
            if index is None
            else torch.as_tensor(index, dtype=torch.long, device=dev)
        ),
        ref_cell=b.cell.clone(),
        pressure=pressure,
        cell_factor=cell_factor,
        start_volume=b.volume(),
        steps=torch.zeros(s, dtype=torch.long, device=dev),
        x=x,
        hinv=x.new_zeros(s, 3 * n_rows, 3 * n_rows),  # set below
        x_prev=torch.zeros_like(x),
        g_prev=torch.zeros_like(x),
        h_prev=x.new_zeros(s),
        has_prev=torch.zeros(s, dtype=torch.bool, device=dev),
        close_strikes=torch.zeros(s, dtype=torch.long, device=dev),
        fixed_cell=config.fixed_cell,
        alpha=config.alpha,
    )
    return replace(state, hinv=state.initial_hinv())


def geometry(state: BFGSState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cartesian geometry of the current coordinates.

    -> positions [N, 3] Å, cell [S, 3, 3] Å, log-strain L [S, 3, 3], F = exp(L) [S, 3, 3].
    """
    log_strain = state.x[:, :3, :] / state.cell_factor[:, None, None]  # [S, 3, 3]
    if state.fixed_cell:
        F = torch.eye(3, dtype=state.x.dtype, device=state.x.device).expand_as(log_strain)
    else:
        F = deformation_gradient(log_strain)
    u = state.x[state.batch, state.row]  # [N, 3]
    positions, cell = deform(u, state.ref_cell, F, state.batch)
    return positions, cell, log_strain, F


def bfgs_step(
    state: BFGSState, potential: BatchedPotential, config: RelaxConfig
) -> tuple[BFGSState, StepOutput]:
    """Evaluate the potential at the current coordinates, check, update, and step.

    Returns the new state (finished structures unmoved) and what the evaluation found.
    """
    s, n_rows = state.n_structures, state.n_rows
    d = 3 * n_rows
    dt = state.x.dtype

    positions, cell, log_strain, F = geometry(state)
    pdtype = potential.dtype
    # ids = the caller's structure ids, stable while a structure stays in the batch, so a
    # potential can reuse per-structure work across steps (ACNNPotential: neighbour lists)
    out = potential.compute(
        StructureBatch(
            positions=positions.to(pdtype),
            cell=cell.to(pdtype),
            numbers=state.numbers,
            ptr=state.ptr,
            ids=state.index,
        )
    )
    energy = out.energy.detach().to(dt)  # [S]
    forces = out.forces.detach().to(dt)  # [N, 3]
    stress = out.stress.detach().to(dt)  # [S, 3, 3]
    volume = torch.linalg.det(cell).abs()  # [S]
    enthalpy = energy + state.pressure * volume  # [S]

    atom_force, cell_force, residual = generalized_forces(
        forces, stress, volume, state.pressure, log_strain, F, state.batch
    )
    gen = torch.zeros_like(state.x)  # [S, R, 3] generalised force
    gen[state.batch, state.row] = atom_force
    fpad = torch.zeros_like(state.x)  # [S, R, 3] Cartesian forces
    fpad[state.batch, state.row] = forces
    if not state.fixed_cell:
        gen[:, :3, :] = cell_force / state.cell_factor[:, None, None]
    grad = -gen  # [S, R, 3]

    # --- checks at the evaluated geometry ------------------------------------------------
    n = state.n_atoms.to(dt)  # [S]
    finite = (
        torch.isfinite(energy)
        & torch.isfinite(fpad).all(dim=2).all(dim=1)
        & torch.isfinite(stress).flatten(1).all(dim=1)
    )  # [S]
    fmax = fpad.abs().amax(dim=(1, 2))  # [S]
    if state.fixed_cell:
        stress_res = torch.zeros_like(energy)
    else:
        stress_res = residual.abs().amax(dim=(1, 2))  # [S]
    rise = (enthalpy - state.h_prev) / n  # [S] eV/atom
    dh = torch.where(state.has_prev, rise.abs(), torch.full_like(rise, float("inf")))
    converged = (
        finite
        & (fmax <= config.fmax)
        & (stress_res <= config.stress_tol_ev)
        & (dh <= config.energy_tol)
    )
    code = cell_checks(cell, volume, state.start_volume, energy, state.n_atoms, config)
    code = torch.where((code == 0) & converged, int(Code.CONVERGED), code)
    code = torch.where((code == 0) & (state.steps >= config.max_steps), int(Code.MAX_STEPS), code)
    code = torch.where(finite, code, int(Code.NON_FINITE))
    running = code == 0  # [S]

    # --- inverse-Hessian update --------------------------------------------------------
    sv = (state.x - state.x_prev).reshape(s, d)  # [S, D]
    yv = (grad - state.g_prev).reshape(s, d)  # [S, D]
    if config.energy_rise_reset is None:
        rose = torch.zeros_like(state.has_prev)  # [S]
    else:
        rose = state.has_prev & (rise > config.energy_rise_reset)  # [S]
    sy = (sv * yv).sum(dim=1)  # [S]
    curv_ok = sy > 1e-12 * sv.norm(dim=1) * yv.norm(dim=1)
    upd = running & state.has_prev & ~rose & curv_ok  # [S]
    sv = torch.where(upd[:, None], sv, 0.0)
    yv = torch.where(upd[:, None], yv, 0.0)
    rho = torch.where(upd, 1.0 / torch.where(upd, sy, 1.0), 0.0)  # [S]
    g_run = torch.where(running[:, None], grad.reshape(s, d), 0.0)  # [S, D]
    # H y and H g in one pass over the inverse Hessians (the step is then H+ g = H g + U V^T g,
    # so H is read twice per step, not three times; it is the only large array here)
    hw = torch.bmm(state.hinv, torch.stack([yv, g_run], dim=2))  # [S, D, 2]
    hy, hg = hw[:, :, 0], hw[:, :, 1]  # [S, D]
    yhy = (yv * hy).sum(dim=1)  # [S]
    # H+ = H - rho (s hy^T + hy s^T) + (rho^2 y.Hy + rho) s s^T, as one rank-2 update U V^T
    c = rho * rho * yhy + rho  # [S]
    u_mat = torch.stack([c[:, None] * sv - rho[:, None] * hy, -rho[:, None] * sv], dim=2)
    v_mat = torch.stack([sv, hy], dim=2)  # [S, D, 2]; u_mat [S, D, 2]
    hinv = torch.baddbmm(state.hinv, u_mat, v_mat.transpose(1, 2))  # [S, D, D]
    hg = hg + torch.bmm(u_mat, torch.bmm(v_mat.transpose(1, 2), g_run[:, :, None])).squeeze(2)
    reset = running & rose  # [S]
    if bool(reset.any()):
        init = state.initial_hinv()  # [S, D, D]
        hinv = torch.where(reset[:, None, None], init, hinv)
        hg = torch.where(reset[:, None], torch.bmm(init, g_run[:, :, None]).squeeze(2), hg)

    # --- step ---------------------------------------------------------------------------
    p = -hg.reshape(s, n_rows, 3)  # [S, R, 3], the quasi-Newton step -H+ g
    longest = p.norm(dim=2).amax(dim=1)  # [S]
    scale = torch.clamp(config.max_step / longest.clamp_min(1e-300), max=1.0)  # [S]
    x_new = state.x + p * scale[:, None, None]

    new_state = replace(
        state,
        x=x_new,
        hinv=hinv,
        x_prev=state.x,
        g_prev=grad,
        h_prev=enthalpy,
        has_prev=torch.ones_like(state.has_prev),
        steps=state.steps + running.long(),
    )
    report = StepOutput(
        code=code,
        energy=energy,
        enthalpy=enthalpy,
        energy_change=dh,
        fmax=fmax,
        stress_residual=stress_res,
        volume=volume,
        steps=state.steps,
        positions=positions,
        cell=cell,
        forces=forces,
        stress=stress,
    )
    return new_state, report
