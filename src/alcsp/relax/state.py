"""The state of a batched BFGS relaxation, and how structures leave and join it.

Shape letters:
    S  structures in the batch
    N  atoms in the batch (all structures together; structure s owns a contiguous block)
    R  rows of the padded degrees of freedom per structure: 3 cell rows + A_max atom rows
    D  = 3 R, degrees of freedom per structure (padded)

Degrees of freedom of structure s, as rows of ``x[s]`` ([R, 3], the layout of ASE's
FrechetCellFilter with the cell rows first so that padding sits at the end):
    rows 0-2            the log-strain L times the cell factor (zero rows in fixed-cell mode)
    rows 3 .. 3+n_s-1   the atoms' reference positions u (Å), Cartesian r = F u
    rows 3+n_s .. R-1   padding (never moves: zero gradient, zero inverse-Hessian block)

The inverse Hessian of structure s is ``hinv[s]`` ([D, D]); its rows and columns for the
padding (and for the cell in fixed-cell mode) are zero, so those coordinates stay frozen
under the BFGS update (every update term is an outer product of vectors that vanish there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class BFGSState:
    """Everything a batched BFGS step needs; functions return new states, never mutate."""

    # per atom
    numbers: torch.Tensor  # [N] long, atomic numbers
    batch: torch.Tensor  # [N] long, structure of each atom
    row: torch.Tensor  # [N] long, row of each atom in x (3 + index within its structure)
    # per structure
    ptr: torch.Tensor  # [S+1] long, atom offsets
    n_atoms: torch.Tensor  # [S] long
    index: torch.Tensor  # [S] long, the caller's id of each structure
    ref_cell: torch.Tensor  # [S, 3, 3] Å, the cell at the start (F = I)
    pressure: torch.Tensor  # [S] eV/Å³, target pressure
    cell_factor: torch.Tensor  # [S], scale of the log-strain coordinates (ASE exp_cell_factor)
    start_volume: torch.Tensor  # [S] Å³
    steps: torch.Tensor  # [S] long, BFGS steps taken
    x: torch.Tensor  # [S, R, 3] current coordinates (see module docstring)
    hinv: torch.Tensor  # [S, D, D] inverse Hessian, Å²/eV on atom rows
    x_prev: torch.Tensor  # [S, R, 3] coordinates at the previous evaluation
    g_prev: torch.Tensor  # [S, R, 3] enthalpy gradient at the previous evaluation
    h_prev: torch.Tensor  # [S] eV, enthalpy at the previous evaluation
    has_prev: torch.Tensor  # [S] bool, whether a previous evaluation exists
    close_strikes: torch.Tensor  # [S] long, consecutive distance checks that found close atoms
    fixed_cell: bool
    alpha: float  # eV/Å², the initial Hessian is alpha * I

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[1])

    def row_mask(self) -> torch.Tensor:
        """[S, R] bool: rows that are real degrees of freedom."""
        r = torch.arange(self.n_rows, device=self.x.device)  # [R]
        mask = r[None, :] < (3 + self.n_atoms)[:, None]  # [S, R]
        if self.fixed_cell:
            mask = mask & (r[None, :] >= 3)
        return mask

    def initial_hinv(self) -> torch.Tensor:
        """[S, D, D] the starting inverse Hessian: I / alpha on the real degrees of freedom."""
        dof = self.row_mask().repeat_interleave(3, dim=1).to(self.x.dtype)  # [S, D]
        return torch.diag_embed(dof / self.alpha)


def pad_rows(state: BFGSState, n_rows: int) -> BFGSState:
    """The same state with R grown (zeros) or cropped to ``n_rows`` rows."""
    r = state.n_rows
    if n_rows == r:
        return state
    if n_rows < r:
        d = 3 * n_rows
        return replace(
            state,
            x=state.x[:, :n_rows],
            x_prev=state.x_prev[:, :n_rows],
            g_prev=state.g_prev[:, :n_rows],
            hinv=state.hinv[:, :d, :d].contiguous(),
        )
    grow = n_rows - r

    def rows(t: torch.Tensor) -> torch.Tensor:  # [S, R, 3] -> [S, n_rows, 3]
        return torch.nn.functional.pad(t, (0, 0, 0, grow))

    d = 3 * grow
    return replace(
        state,
        x=rows(state.x),
        x_prev=rows(state.x_prev),
        g_prev=rows(state.g_prev),
        hinv=torch.nn.functional.pad(state.hinv, (0, d, 0, d)),
    )


def select(state: BFGSState, keep: torch.Tensor) -> BFGSState:
    """The structures where ``keep`` ([S] bool) is true, in order; padding shrinks to fit."""
    idx = keep.nonzero().squeeze(1)  # [S']
    atom_keep = keep[state.batch]  # [N]
    new_id = torch.cumsum(keep.long(), 0) - 1  # [S], new position of kept structures
    n_atoms = state.n_atoms[idx]
    ptr = torch.cat([n_atoms.new_zeros(1), torch.cumsum(n_atoms, 0)])
    out = BFGSState(
        numbers=state.numbers[atom_keep],
        batch=new_id[state.batch[atom_keep]],
        row=state.row[atom_keep],
        ptr=ptr,
        n_atoms=n_atoms,
        index=state.index[idx],
        ref_cell=state.ref_cell[idx],
        pressure=state.pressure[idx],
        cell_factor=state.cell_factor[idx],
        start_volume=state.start_volume[idx],
        steps=state.steps[idx],
        x=state.x[idx],
        hinv=state.hinv[idx],
        x_prev=state.x_prev[idx],
        g_prev=state.g_prev[idx],
        h_prev=state.h_prev[idx],
        has_prev=state.has_prev[idx],
        close_strikes=state.close_strikes[idx],
        fixed_cell=state.fixed_cell,
        alpha=state.alpha,
    )
    n_rows = 3 + int(n_atoms.max()) if len(idx) else 3
    return pad_rows(out, n_rows)


def concat(a: BFGSState, b: BFGSState) -> BFGSState:
    """Structures of ``a`` followed by those of ``b`` (same mode and alpha)."""
    if a.fixed_cell != b.fixed_cell or a.alpha != b.alpha:
        raise ValueError("cannot join BFGS states with different fixed_cell or alpha")
    n_rows = max(a.n_rows, b.n_rows)
    a, b = pad_rows(a, n_rows), pad_rows(b, n_rows)
    n_atoms = torch.cat([a.n_atoms, b.n_atoms])
    return BFGSState(
        numbers=torch.cat([a.numbers, b.numbers]),
        batch=torch.cat([a.batch, b.batch + a.n_structures]),
        row=torch.cat([a.row, b.row]),
        ptr=torch.cat([n_atoms.new_zeros(1), torch.cumsum(n_atoms, 0)]),
        n_atoms=n_atoms,
        index=torch.cat([a.index, b.index]),
        ref_cell=torch.cat([a.ref_cell, b.ref_cell]),
        pressure=torch.cat([a.pressure, b.pressure]),
        cell_factor=torch.cat([a.cell_factor, b.cell_factor]),
        start_volume=torch.cat([a.start_volume, b.start_volume]),
        steps=torch.cat([a.steps, b.steps]),
        x=torch.cat([a.x, b.x]),
        hinv=torch.cat([a.hinv, b.hinv]),
        x_prev=torch.cat([a.x_prev, b.x_prev]),
        g_prev=torch.cat([a.g_prev, b.g_prev]),
        h_prev=torch.cat([a.h_prev, b.h_prev]),
        has_prev=torch.cat([a.has_prev, b.has_prev]),
        close_strikes=torch.cat([a.close_strikes, b.close_strikes]),
        fixed_cell=a.fixed_cell,
        alpha=a.alpha,
    )
