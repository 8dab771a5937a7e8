"""The oracle's relaxations: the reference phases in iteration 0, and the final stage.

``final_choice`` is the final stage's pure core: it takes the hull of the labels
(``LabelledHull``), what the oracle has relaxed before and a fingerprint function, and
returns the terminals to relax first and up to ``m`` compounds; no store, no oracle.
``final_relaxation`` stores that choice before relaxing anything, so a kill resumes the
same picks, then relaxes them with the oracle (``oracle_relax``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from alcsp.campaign.context import StageContext
from alcsp.campaign.events import StageStarted
from alcsp.dedup import DedupConfig, Deduplicator
from alcsp.search import relaxed_fingerprint
from alcsp.store.hulls import HullSnapshot, LabelledHull, reference_names, terminal_warnings
from alcsp.vocab import OracleRelaxStatus, OracleStage, Origin

Fingerprint = Callable[[Atoms], np.ndarray | None]


@dataclass(frozen=True)
class FinalChoice:
    terminals: list[int]  # structure ids: each element's lowest label, when not relaxed yet
    compounds: list[int]  # structure ids, round robin over compositions, best E_hull first


def final_choice(
    lh: LabelledHull,
    relaxed_parents: Collection[int],
    elements: tuple[str, ...],
    dedup: DedupConfig,
    e_hull_window: float,
    m: int,
    fingerprint: Fingerprint,
) -> FinalChoice:
    """Every element's lowest label, unless it is oracle-relaxed or was relaxed before;
    and up to ``m`` compounds: per composition within ``e_hull_window`` (eV/atom) of the
    hull, its labels in E_hull order without fingerprint duplicates (of each other or of
    anything relaxed before), never one relaxed before, taken round robin over the
    compositions in order of their best E_hull. Ties in E_hull go to the lower id."""
    hull = lh.hull
    sids = [lh.structure_id(i) for i in range(len(lh.kept))]
    atoms = [lh.structures[k] for k in lh.kept]
    origin = [a.info["origin"] for a in atoms]
    keys = [hull.keys[hull.comp_index[i]] for i in range(len(sids))]
    order = sorted(range(len(sids)), key=lambda i: (hull.e_hull[i], sids[i]))

    def relaxed(i: int) -> bool:
        return origin[i] == Origin.ORACLE_RELAXED or sids[i] in relaxed_parents

    terminals: list[int] = []
    for el in elements:
        own = [i for i in order if keys[i] == el]
        if own and not relaxed(own[0]):
            terminals.append(sids[own[0]])
    seen = Deduplicator(dedup)
    h = hull.enthalpy
    for i in order:  # anything relaxed before blocks its duplicates
        if keys[i] not in elements and relaxed(i):
            fp = fingerprint(atoms[i])
            if fp is not None:
                seen.add(str(sids[i]), keys[i], float(h[i]), fp)
    queues: dict[str, list[int]] = {}
    for i in order:
        if keys[i] in elements or hull.e_hull[i] > e_hull_window + 1e-12 or relaxed(i):
            continue
        fp = fingerprint(atoms[i])
        if fp is None or seen.add(str(sids[i]), keys[i], float(h[i]), fp) is None:
            queues.setdefault(keys[i], []).append(sids[i])
    compounds: list[int] = []
    while len(compounds) < m and any(queues.values()):
        for key in list(queues):  # dicts keep insertion order: best E_hull first
            if queues[key] and len(compounds) < m:
                compounds.append(queues[key].pop(0))
    return FinalChoice(terminals, compounds)


def oracle_relax(ctx: StageContext, ids: list[int], stage: str, round_: int) -> None:
    """Relax ``ids`` with the oracle within the budget left; store each outcome."""
    from alcsp.oracle_relax import OracleRelaxFailure, relax_with_oracle

    fin = ctx.config.final
    store = ctx.store
    left = ctx.budget_left()
    steps = fin.max_steps
    if left is not None:
        if left <= 0:
            ctx.notice(f"{stage}: oracle budget spent; {len(ids)} relaxations not run")
            return
        # each step is one oracle call, plus the first evaluation
        steps = max(1, min(steps, left // len(ids) - 1))
    names = reference_names(store)
    ctx.notice(
        f"{stage}: relaxing {len(ids)} structures with {ctx.oracle_name} "
        f"(at most {steps} steps each)"
    )
    ctx.emit(StageStarted(round_, stage, len(ids), "oracle relaxations"))
    results = relax_with_oracle(
        ctx.oracle,
        store.get_atoms(ids),
        [f"{stage}-s{i}" for i in ids],
        ctx.config.campaign.pressure,
        fin.fmax,
        steps,
        ctx.executor(),
        max_time_s=fin.max_time_s or None,
    )
    for sid, r in zip(ids, results, strict=True):
        what = names.get(sid, f"structure {sid}")
        if isinstance(r, OracleRelaxFailure):
            store.add_oracle_relaxation(
                sid, stage, round_, OracleRelaxStatus.FAILED, 0, r.calls, r.wall_time, r.reason
            )
            ctx.notice(f"{stage}: relaxing {what} failed: {r.reason}")
            continue
        store.add_oracle_relaxation(
            sid,
            stage,
            round_,
            str(r.status),
            r.steps,
            r.calls,
            r.wall_time,
            relaxed=r.atoms,
            label=r.label(ctx.oracle_name),
        )
        if r.status != OracleRelaxStatus.CONVERGED:
            ctx.notice(
                f"{stage}: {what} stopped at its {r.status} after {r.steps} steps "
                "(stored and marked)"
            )


def relax_references(ctx: StageContext) -> None:
    """Relax every successfully labelled reference phase with the oracle (once; a kill
    resumes each from its checkpoint). The relaxed phases are labels like any other:
    on every hull and in the training set."""
    store = ctx.store
    refs = store.structure_ids(origin=Origin.REFERENCE_PHASE, iteration=0)
    done = {r.parent_id for r in store.oracle_relaxations(OracleStage.REFERENCES)}
    ok = store.labelled_ids(ctx.oracle_name, include_failures=False)
    todo = [i for i in refs if i in ok and i not in done]
    if todo:
        oracle_relax(ctx, todo, OracleStage.REFERENCES, 0)


def final_candidates(ctx: StageContext, m: int) -> FinalChoice:
    """``final_choice`` on the hull of the campaign's labels now."""
    lh = ctx.labelled_hull()
    if lh is None:
        return FinalChoice([], [])
    return final_choice(
        lh,
        {r.parent_id for r in ctx.store.oracle_relaxations()},
        ctx.config.elements,
        ctx.config.dedup,
        ctx.config.final.e_hull_window,
        m,
        lambda atoms: relaxed_fingerprint(atoms, ctx.config.dedup.fingerprint),
    )


def _final_relax(ctx: StageContext, ids: list[int], round_: int) -> None:
    done = {r.parent_id for r in ctx.store.oracle_relaxations(OracleStage.FINAL)}
    todo = [i for i in ids if i not in done]
    if todo:
        oracle_relax(ctx, todo, OracleStage.FINAL, round_)


def final_relaxation(ctx: StageContext) -> HullSnapshot | None:
    """Relax with the oracle every terminal and the lowest distinct near-hull structures
    (``final_choice``); store and report the final DFT hull.

    One round per state of the campaign: the picks are stored before any relaxation
    starts, so a kill resumes the same picks (each from its checkpoint); a campaign
    extended by more iterations gets a new round over the candidates not relaxed yet.
    """
    store = ctx.store
    m = ctx.config.final.structures
    if m > 0:
        finished = [it.index for it in store.iterations() if it.finished is not None]
        round_ = max(finished, default=0)
        raw = store.meta("final_picks")
        stored = json.loads(raw) if raw else None
        if stored is None or stored["round"] != round_:
            terminals = final_candidates(ctx, 0).terminals
            stored = {"round": round_, "terminals": terminals, "compounds": None}
            store.set_meta("final_picks", json.dumps(stored))
        _final_relax(ctx, [int(i) for i in stored["terminals"]], round_)
        # Compounds are chosen on the hull of the relaxed terminals: a terminal far from
        # its minimum shifts every formation enthalpy and so every E_hull window.
        if stored["compounds"] is None:
            stored["compounds"] = final_candidates(ctx, m).compounds
            store.set_meta("final_picks", json.dumps(stored))
        _final_relax(ctx, [int(i) for i in stored["compounds"]], round_)
    hull = ctx.oracle_hull()
    if hull is not None:
        store.set_meta("final_hull", json.dumps(hull.to_json()))
        ctx.notice(
            "final hull: "
            + ", ".join(f"{k} ({v * 1000:.1f} meV/atom)" for k, v in sorted(hull.stable.items()))
        )
        for warning in terminal_warnings(store, ctx.config):
            ctx.notice(warning, warning=True)
    return hull
