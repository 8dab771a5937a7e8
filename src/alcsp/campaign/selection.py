"""The selection stage: from iteration n's ACNN relaxations to the structures to label.

The core is pure and works on in-memory tables: ``acnn_e_hull`` places the converged
relaxations on the hull of their ACNN enthalpies, ``selection_candidates`` turns the
relaxation table into ``Candidate`` rows, ``labelled_basins`` builds the duplicate check of
what the oracle has seen, and ``alcsp.select`` applies the composition-wise rule. ``select``
reads those tables from the store and returns a ``SelectionResult``; the loop stores it
(the ACNN E_hull of each placed relaxation) and labels its ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from alcsp.campaign.context import StageContext
from alcsp.campaign.training import within_force_cap
from alcsp.committee import Committee
from alcsp.dedup import DedupConfig, Deduplicator
from alcsp.potential import ACNNPotential
from alcsp.potential.model import ACNN
from alcsp.select import Candidate, cap_selection, select_for_labelling
from alcsp.store import RelaxationTable
from alcsp.store.hulls import hull_of
from alcsp.structures import StructureBatch
from alcsp.units import GPA
from alcsp.vocab import Origin, RelaxStatus, composition_key


@dataclass(frozen=True)
class SelectionResult:
    """What iteration n labels, and the ACNN hull it was chosen on."""

    ids: list[int]  # structure ids to label, within the oracle budget
    placed: np.ndarray  # [P] relaxation ids on the ACNN hull
    e_hull: np.ndarray  # [P] their E_hull, eV/atom


def acnn_e_hull(
    keys: np.ndarray,
    enthalpy: np.ndarray,
    converged: np.ndarray,
    ref_keys: np.ndarray,
    ref_enthalpy: np.ndarray,
    elements: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """E_hull [S] (eV/atom; NaN off the hull) of the S relaxations with composition keys
    ``keys`` and ACNN enthalpies ``enthalpy`` [S], on the hull of the converged ones and
    the stand-in terminals (``ref_keys``, ``ref_enthalpy``), and the rows placed on it, in
    the hull's order. A composition whose terminal is missing is not placed."""
    e_hull = np.full(len(keys), np.nan)
    n_conv = int(converged.sum())
    hull = hull_of(
        np.concatenate([keys[converged], ref_keys]),
        np.concatenate([enthalpy[converged], ref_enthalpy]),
        elements,
    )
    if hull is None:
        return e_hull, np.array([], dtype=np.int64)
    own = hull[1] < n_conv  # this iteration's entries; the references come after
    rows = np.nonzero(converged)[0][hull[1][own]]
    e_hull[rows] = hull[0].e_hull[own]
    return e_hull, rows


def selection_candidates(
    rel: RelaxationTable,
    e_hull: np.ndarray,
    fingerprints: Mapping[int, np.ndarray],
    spread: np.ndarray,
    trust_frames: Mapping[int, int],
) -> list[Candidate]:
    """One ``Candidate`` per relaxation of ``rel`` with its E_hull [R] and committee spread
    [R] (eV/atom; fingerprints by relaxation id). A relaxation that did not converge is
    represented by its trust frame (by start id) where it has one; a converged one the hull
    could not place (a missing terminal) is left out."""
    out = []
    for k in range(len(rel.id)):
        status = str(rel.status[k])
        if status == RelaxStatus.CONVERGED and not math.isfinite(e_hull[k]):
            continue
        sid = int(rel.structure_id[k])
        if status != RelaxStatus.CONVERGED:
            sid = trust_frames.get(int(rel.initial_id[k]), sid)
        out.append(
            Candidate(
                id=str(sid),
                composition=composition_key(str(rel.composition[k])),
                enthalpy_per_atom=float(rel.enthalpy_per_atom[k]),
                e_hull=float(e_hull[k]),
                status=status,
                fingerprint=fingerprints.get(int(rel.id[k])),
                spread=float(spread[k]),
            )
        )
    return out


def labelled_rows(
    rel: RelaxationTable, fingerprints: Mapping[int, np.ndarray], labelled: set[int]
) -> list[int]:
    """Rows of ``rel`` whose final structure is labelled and has a fingerprint."""
    return [
        k
        for k, sid in enumerate(rel.structure_id)
        if int(sid) in labelled and fingerprints.get(int(rel.id[k])) is not None
    ]


def basins(
    rel: RelaxationTable,
    rows: list[int],
    enthalpy: np.ndarray,
    fingerprints: Mapping[int, np.ndarray],
    dedup: DedupConfig,
) -> Deduplicator:
    """The relaxations ``rows`` of ``rel`` at enthalpies ``enthalpy`` [len(rows)] (eV/atom)
    as a Deduplicator; a non-finite enthalpy is left out."""
    known = Deduplicator(dedup)
    for k, hk in zip(rows, enthalpy, strict=True):
        if math.isfinite(hk):
            key = composition_key(rel.composition[k])
            known.add(str(rel.structure_id[k]), key, float(hk), fingerprints[int(rel.id[k])])
    return known


def model_enthalpies(
    model: ACNN, atoms: list[Atoms], pressure_gpa: float, chunk: int = 256
) -> np.ndarray:
    """Enthalpies per atom [S] (eV/atom) of ``model`` at the given geometries (single
    points at ``pressure_gpa``), in chunks of ``chunk`` structures."""
    pot = ACNNPotential(model, dtype=torch.float64)
    p = pressure_gpa * GPA
    out = np.empty(len(atoms))
    for start in range(0, len(atoms), chunk):
        part = atoms[start : start + chunk]
        batch = StructureBatch.from_atoms(part, dtype=torch.float64)
        energy = pot.compute(batch).energy.detach().numpy()  # [s] eV
        for j, (a, e) in enumerate(zip(part, energy, strict=True)):
            out[start + j] = (float(e) + p * a.get_volume()) / len(a)
    return out


def labelled_basins(ctx: StageContext, labelled: set[int], model: ACNN | None) -> Deduplicator:
    """The labelled ACNN minima as a Deduplicator, for the selection to skip basins the
    oracle has already seen. Their enthalpies are those of ``model`` (this iteration's,
    at the stored geometries), so that they compare with this iteration's candidates:
    the enthalpies stored when they were relaxed come from an earlier model, and after
    training on a basin's own label the model's enthalpy of it moves by more than the
    duplicate check's energy tolerance, so the same basin was selected again (Cu-Au: a
    P2_1/c CuAu labelled in three iterations). Without a model, the stored ones."""
    rel = ctx.store.relaxations(method="acnn")
    fps = ctx.store.fingerprints(rel.id.tolist())
    rows = labelled_rows(rel, fps, labelled)
    h = np.array([float(rel.enthalpy_per_atom[k]) for k in rows])  # [R] eV/atom
    if model is not None and rows:
        atoms = ctx.store.get_atoms([int(rel.structure_id[k]) for k in rows])
        h = model_enthalpies(model, atoms, ctx.config.campaign.pressure)
    return basins(rel, rows, h, fps, ctx.config.dedup)


def terminal_references(
    ctx: StageContext, n: int, present: set[str], model: ACNN | None
) -> tuple[np.ndarray, np.ndarray]:
    """Hull entries (keys, enthalpies eV/atom) for the elements with no converged ACNN
    relaxation among ``present`` in iteration ``n``: the lowest-enthalpy converged ACNN
    relaxations of that element from earlier iterations (up to 3) and its labelled
    structures, evaluated with ``model`` at their geometry; the lowest per element. A
    single point, not a relaxation: an upper bound of the model's own terminal enthalpy.
    """
    cfg, store = ctx.config, ctx.store
    missing = [e for e in cfg.elements if e not in present]
    if not missing or model is None:
        return np.array([], dtype=object), np.array([], dtype=float)
    rel = store.relaxations(status=RelaxStatus.CONVERGED, method="acnn")
    ids: list[int] = []
    for el in missing:
        own = [
            k
            for k in range(len(rel.id))
            if rel.iteration[k] < n and composition_key(rel.composition[k]) == el
        ]
        own.sort(key=lambda k: rel.enthalpy_per_atom[k])
        ids += [int(rel.structure_id[k]) for k in own[:3]]
    labels = within_force_cap(store.training_set(ctx.oracle_name), cfg.campaign.train_max_force)
    atoms = store.get_atoms(ids) + [
        a for a in labels if composition_key(a.get_chemical_formula()) in missing
    ]
    best: dict[str, float] = {}
    for a, h in zip(atoms, model_enthalpies(model, atoms, cfg.campaign.pressure), strict=True):
        key = composition_key(a.get_chemical_formula())
        if math.isfinite(h) and h < best.get(key, math.inf):
            best[key] = float(h)
    for el in missing:
        ctx.notice(
            f"iteration {n}: no converged {el} relaxation in this iteration; "
            + (
                f"hull reference {best[el]:.4f} eV/atom from earlier {el} structures"
                if el in best
                else f"none earlier either: compositions with {el} "
                "are left out of this iteration's ACNN hull"
            )
        )
    keys = sorted(best)
    return np.array(keys, dtype=object), np.array([best[k] for k in keys], dtype=float)


def select(
    ctx: StageContext, n: int, model: ACNN | None = None, committee: Committee | None = None
) -> SelectionResult:
    """Hull from this iteration's ACNN enthalpies, then the composition-wise selection
    (with a committee: its energy spreads for the lower confidence bound, and the trust
    frames of the relaxations that did not converge in their place), capped to the
    iteration's share of the oracle budget.

    An element with no converged relaxation in this iteration (its random cells all went
    unphysical, say) would leave every composition containing it off the hull; with
    ``model`` given, earlier structures of that element stand in (``terminal_references``).
    """
    cfg, store = ctx.config, ctx.store
    rel = store.relaxations(iteration=n, method="acnn")
    if len(rel.id) == 0:
        return SelectionResult([], np.array([], dtype=np.int64), np.array([]))
    keys = np.array([composition_key(c) for c in rel.composition], dtype=object)
    conv = rel.status == RelaxStatus.CONVERGED
    ref_keys, ref_h = terminal_references(ctx, n, set(keys[conv]), model)
    e_hull, rows = acnn_e_hull(keys, rel.enthalpy_per_atom, conv, ref_keys, ref_h, cfg.elements)
    fps = store.fingerprints(rel.id.tolist())
    spread = np.zeros(len(keys))  # [S] eV/atom
    frames: dict[int, int] = {}
    if committee is not None:
        placed = np.nonzero(conv & np.isfinite(e_hull))[0]
        atoms = store.get_atoms([int(i) for i in rel.structure_id[placed]])
        spread[placed] = committee.evaluate(atoms, cfg.campaign.pressure).energy_std
        frames = store.children(Origin.TRUST_FRAME)
    candidates = selection_candidates(rel, e_hull, fps, spread, frames)
    labelled = store.labelled_before(ctx.oracle_name, n)
    full = select_for_labelling(
        candidates,
        cfg.selection.for_iteration(n),
        labelled_ids=[str(i) for i in labelled],
        labelled=labelled_basins(ctx, labelled, model),
        dedup=cfg.dedup,
    )
    cap = ctx.iteration_cap(n)
    selection = cap_selection(full, cap, cfg.campaign.failure_share)
    ids = ctx.within_budget([int(i) for i in selection.ids])
    capped = (
        f" (cap {cap}: {len(full.minima)} minima, {len(full.failures)} failures before it)"
        if len(selection.ids) < len(full.ids)
        else ""
    )
    ctx.notice(
        f"iteration {n}: selected {len(selection.minima)} minima from "
        f"{len(selection.compositions)} compositions + {len(selection.failures)} "
        f"unconverged/unphysical{capped}; labelling {len(ids)}"
    )
    return SelectionResult(ids, rel.id[rows], e_hull[rows])
